"""The ``restore`` command line (typer + rich). Each command is a thin layer over functions usable from Python.

User mistakes end in one sentence naming the problem and the fix, exit code 2, and no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from priors.card import PriorError

from .cli_prior import prior_app
from .console import console, err_console
from .errors import RestoreError

# torch and everything that imports it (operators, solvers, priors' networks) are imported inside the commands that
# need them, so that `restore --help` and `restore list priors` answer in well under a second

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Image restoration and inverse problems with diffusion priors.")
list_app = typer.Typer(no_args_is_help=True, help="List operators, presets and priors.")
app.add_typer(list_app, name="list")
app.add_typer(prior_app, name="prior")


@app.command()
def degrade(
    images: List[str] = typer.Argument(..., help="clean images or folders (searched recursively)"),
    operator: str = typer.Option(..., "--operator", "-o", help="operator spec or preset, e.g. sr4 or 'sr:factor=4'"),
    noise: str = typer.Option("0", "--noise", "-n", help="noise σ on the [0, 1] scale (e.g. 0.025), "
                                                        "'poisson:RATE' or 'none'"),
    seed: int = typer.Option(0, "--seed", help="base seed; each image's seed is derived from it and its name"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace measurement files that exist"),
):
    """Make measurement files (.npz) and preview PNGs from clean images."""
    from .degrade import degrade_files

    rows = degrade_files(images, operator, noise, seed, out, overwrite=overwrite)
    import operators

    table = Table(title=f"measurements with {operators.parse(operator)}")
    for col in ("image", "measurement", "shape", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["image"]), str(r["measurement"]), "×".join(map(str, r["shape"])), r["status"])
    console.print(table)
    for r in rows:
        for note in r.get("notes") or []:
            err_console.print(f"[yellow]note:[/] {escape(Path(r['image']).name)}: {escape(note)}", highlight=False)


EQUIVARIANT_HELP = ("average the prior's network over symmetries of the image: off, flips (left-right; 2x the time) "
                    "or dihedral (flips and 90-degree rotations; 8x), or NAME:step for one symmetry per step (no "
                    "extra time). Use flips for faces and scans, which have an up")


@app.command("solve")
def solve_command(
    inputs: List[str] = typer.Argument(..., help="measurement files (.npz from 'restore degrade'), plain images "
                                                 "with --operator, or folders (recursive)"),
    solver: str = typer.Option(..., "--solver", "-s", help="dps, ddnm, daps, reddiff, resample or pinv"),
    prior: str = typer.Option("faces64", "--prior", "-p", help="prior name (restore list priors) or checkpoint path"),
    operator: Optional[str] = typer.Option(None, "--operator", "-o", help="spec of plain-image inputs"),
    noise: Optional[str] = typer.Option(None, "--noise", "-n", help="noise σ on [0, 1] of plain-image inputs"),
    mask: Optional[str] = typer.Option(None, "--mask", help="mask file for a masked plain image (1 = observed)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="solver preset (default: the one for the task)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="override the preset's number of steps"),
    param: Optional[List[str]] = typer.Option(None, "--param", help="KEY=VALUE: set one solver parameter on top "
                                              "of the preset (repeatable; 'restore list solvers' names them)"),
    samples: int = typer.Option(1, "--samples", "-k", help="posterior samples per image: their estimate + std map"),
    estimate: str = typer.Option("mean", "--estimate", help="how K samples become the image: mean (the posterior "
                                 "mean, about half a single sample's squared error), median (per pixel), or sample "
                                 "(the first: the K = 1 image)"),
    seed: int = typer.Option(0, "--seed", help="base seed of plain-image inputs"),
    batch_size: int = typer.Option(1, "--batch-size", "-b"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    reference: Optional[str] = typer.Option(None, "--reference", help="clean image or folder for metrics"),
    lpips_weights: Optional[str] = typer.Option(None, "--lpips-weights", envvar="RESTORE_LPIPS_WEIGHTS",
                                                help="LPIPS AlexNet weights file for offline use"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    overwrite: bool = typer.Option(False, "--overwrite", help="redo restore's own outputs that exist (never "
                                   "another file)"),
    fit: Optional[str] = typer.Option(None, "--fit", help="pad, crop or resize a plain image to the prior's size "
                                      "(fixed-size priors) or training scale (ct, brain-mri)"),
    memory_check: bool = typer.Option(True, "--memory-check/--no-memory-check", help="refuse a run whose estimated "
                                      "memory exceeds the free memory"),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default)"),
    tile: int = typer.Option(1024, "--tile", help="any-size priors: evaluate images with a side over N pixels in "
                             "overlapping tiles (bounded memory); 0 never tiles"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, tf32 (CUDA) or bf16 (CUDA, or a CPU with "
                                  "native bfloat16)"),
    compile_net: bool = typer.Option(False, "--compile", help="torch.compile the prior's network (pays off on GPUs "
                                     "and long runs)"),
    equivariant: str = typer.Option("off", "--equivariant", help=EQUIVARIANT_HELP),
):
    """Restore measurements with a diffusion solver; writes images and JSON sidecars (metrics when a ground truth
    is known)."""
    set_threads(threads)
    from .distributed import finish, gather, setup
    from .solve import collect_jobs, parse_params, run

    w, device = setup(device, threads)  # under torchrun: this rank's device; one process otherwise
    params = parse_params(param)
    accel = acceleration(tile, precision, compile_net, equivariant)
    jobs = collect_jobs(inputs, operator, noise, mask, seed, reference, out=out)
    with progress_bar(enabled=w.rank == 0) as bar:
        task = bar.add_task("solving", total=None)

        def progress(label, i, n):
            bar.update(task, description=f"{solver} · {label}", completed=i, total=n)

        rows = run(jobs, solver, prior, out, preset=preset, steps=steps, samples=samples, estimate=estimate,
                   batch_size=batch_size, device=device, overwrite=overwrite, lpips_weights=lpips_weights,
                   progress=progress, params=params, protect=[mask] if mask else [], fit=fit, memory_check=memory_check,
                   notify=lambda text: bar.console.print(f"[bold]{escape(text)}[/]", highlight=False),
                   shard=(w.rank, w.size), accel=accel)
    parts = gather(rows)  # rank 0: every rank's rows, in rank order
    finish()
    if parts is None:
        return
    rows = [r for part in parts for r in part]
    _print_rows(rows, f"restore solve --solver {solver}")
    if any(r["status"] == "failed" for r in rows):
        for r in rows:
            if r["status"] == "failed":
                err_console.print(f"[bold red]failed:[/] {escape(str(r['input']))}: {escape(str(r['error']))}",
                                  highlight=False)
        raise typer.Exit(1)


def acceleration(tile: int, precision: str, compile_net: bool, equivariant: str = "off"):
    """--tile, --precision, --compile and --equivariant as one checked ``Acceleration``."""
    from .acceleration import Acceleration

    accel = Acceleration(tile=tile, precision=precision, compile=compile_net, equivariant=equivariant)
    accel.check()
    return accel


def progress_bar(enabled: bool = True):
    """A transient bar with elapsed and remaining time (rich); hidden on torchrun's other ranks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), "remaining", TimeRemainingColumn(), console=console, transient=True,
                    disable=not enabled)


def set_threads(threads: int) -> None:
    """--threads: torch's intra-op threads (0 keeps torch's default, which OMP_NUM_THREADS sets)."""
    if threads < 0:
        raise RestoreError(f"--threads must be 0 (torch's default) or more, got {threads}.")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _print_rows(rows, title):
    table = Table(title=title)
    for col in ("input", "status", "PSNR", "SSIM", "LPIPS", "s/img", "NFE", "output"):
        table.add_column(col)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        table.add_row(Path(r["input"]).name, r["status"], fmt(r.get("psnr"), ".2f"), fmt(r.get("ssim"), ".3f"),
                      fmt(r.get("lpips"), ".3f"), fmt(r.get("seconds"), ".2f"), str(r.get("nfe", "-")),
                      str(r["output"]))
    written = [r for r in rows if r["status"] == "written"]
    if len(written) > 1:
        def mean(key):
            values = [r[key] for r in written if isinstance(r.get(key), (int, float))]
            return sum(values) / len(values) if values else None

        table.add_section()
        table.add_row(f"mean of {len(written)}", "", fmt(mean("psnr"), ".2f"), fmt(mean("ssim"), ".3f"),
                      fmt(mean("lpips"), ".3f"), fmt(mean("seconds"), ".2f"), "", "", style="bold")
    console.print(table)
    for r in rows:
        for note in r.get("notes") or []:
            err_console.print(f"[yellow]note:[/] {escape(Path(r['input']).name)}: {escape(note)}", highlight=False)


@app.command("bench")
def bench_command(
    images: List[str] = typer.Argument(..., help="clean images or folders; or 'merge' followed by shard folders"),
    operator: str = typer.Option("", "--operator", "-o", help="comma-separated operator specs or presets; "
                                 "separate specs that contain commas with ';'"),
    solver: str = typer.Option("", "--solver", "-s", help="comma-separated solvers, each NAME or NAME:PRESET "
                               "(e.g. dps:fast,dps:default,ddnm); pinv is always added"),
    baselines: str = typer.Option("auto", "--baselines", help="classical baselines in every table: auto (all that "
                                  "take the task), none, or a comma-separated list"),
    prior: str = typer.Option("faces64", "--prior", "-p"),
    noise: str = typer.Option("0", "--noise", "-n", help="measurement noise σ on [0, 1]"),
    limit: int = typer.Option(0, "--limit", help="use N images spread evenly over the sorted inputs (0 = all)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="solver preset (default: the one for each task)"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    samples: str = typer.Option("1", "--samples", "-k", help="posterior samples per image, or a comma-separated "
                                "list: '1,4' shows each stochastic solver twice, as NAME (one sample) and 'NAME "
                                "(mean of 4)'; deterministic solvers (pinv, baselines) run once"),
    estimate: str = typer.Option("mean", "--estimate", help="how K > 1 samples become the image: mean, median or "
                                 "sample (the first)"),
    seed: int = typer.Option(0, "--seed"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: run every n-th image starting at i"),
    batch_size: int = typer.Option(1, "--batch-size", "-b"),
    device: str = typer.Option("auto", "--device"),
    lpips_weights: Optional[str] = typer.Option(None, "--lpips-weights", envvar="RESTORE_LPIPS_WEIGHTS"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (not needed by 'bench report DIR')"),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default)"),
    tile: int = typer.Option(1024, "--tile", help="any-size priors: tile images with a side over N pixels; 0 never"),
    precision: str = typer.Option("fp32", "--precision", help="fp32, tf32 (CUDA) or bf16"),
    compile_net: bool = typer.Option(False, "--compile", help="torch.compile the prior's network"),
    equivariant: str = typer.Option("off", "--equivariant", help=EQUIVARIANT_HELP),
):
    """Benchmark solvers on clean images: degrade, solve, and report PSNR/SSIM/LPIPS/time beside pinv and the
    classical baselines. 'restore bench merge SHARD_DIR... --out DIR' joins sharded runs; 'restore bench report DIR'
    redraws report.md, report.html and report.tex from DIR/results.json; 'restore bench compare A B' prints the
    paired per-image differences B − A of every solver both runs hold (PSNR, SSIM, LPIPS, fine detail)."""
    from .bench import bench, merge

    set_threads(threads)
    if images and images[0] == "compare":  # two finished runs side by side, running no solver
        if len(images) != 3:
            raise RestoreError("give two bench folders: restore bench compare A B (e.g. the same images run with "
                               "two priors).")
        from .compare import compare_folders

        print(compare_folders(images[1], images[2])[1])
        return
    if out is None and not (images and images[0] == "report" and len(images) > 1):
        raise RestoreError("give an output folder with --out (e.g. --out bench/).")
    if images and images[0] == "merge":
        rows = merge(images[1:], out)
        console.print(f"merged {len(rows)} rows into {out / 'results.csv'} and {out / 'report.md'}")
        return
    if images and images[0] == "report":  # redraw the reports from saved results, running no solver
        from .bench import write_report
        from .report import load_rows

        folders = images[1:] or [str(out)]
        for folder in folders:
            write_report(Path(folder), load_rows(Path(folder)))
            console.print(f"wrote {Path(folder) / 'report.md'}, report.html and report.tex")
        return
    if not operator:
        raise RestoreError("give at least one operator with --operator (e.g. sr4,inpaint-box).")
    specs = [s for s in (operator.split(";") if ";" in operator else operator.split(",")) if s.strip()]
    solvers = [s.strip() for s in solver.split(",") if s.strip()]
    if limit < 0:
        raise RestoreError(f"--limit must be 0 (all images) or more, got {limit}.")
    from .bench import parse_samples, solver_of_label
    from .solvers.base import check_estimate

    for label in solvers:
        solver_of_label(label)
    counts = parse_samples(samples)
    check_estimate(estimate)
    accel = acceleration(tile, precision, compile_net, equivariant)
    from .distributed import barrier, finish, setup

    w, device = setup(device, threads)
    if w.active:  # torchrun: each rank one shard, rank 0 merges
        if shard:
            raise RestoreError("--shard and torchrun both split the images; use one of them.")
        shard = w.shard
    with progress_bar(enabled=w.rank == 0) as bar:
        task = bar.add_task("bench", total=None)
        rows = bench(images, specs, solvers, prior, out, noise=noise, limit=limit, preset=preset, steps=steps,
                     seed=seed, shard=shard, batch_size=batch_size, device=device, lpips_weights=lpips_weights,
                     progress=lambda label, i, n: bar.update(task, description=label, completed=i, total=n),
                     baselines=baselines, threads=threads, samples=counts, estimate=estimate, accel=accel)
    if w.active:
        barrier()
        finish()
        if w.rank != 0:
            return
        rows = merge([str(out / f"shard-{k}-of-{w.size}") for k in range(w.size)], out)
    from .bench import gains, summarise

    gain = gains(rows)
    table = Table(title=f"restore bench ({len(rows)} results) → {out}")
    for col in ("operator", "solver", "n", "PSNR", "SSIM", "LPIPS", "s/img", "ΔPSNR vs best baseline",
                "ΔLPIPS vs best baseline"):
        table.add_column(col)
    for op, per in summarise(rows).items():
        by = {m: {e["solver"]: e for e in v["rows"]} for m, v in gain.get(op, {}).items()}
        best = {m: v["best"] for m, v in gain.get(op, {}).items()}

        def delta(metric, name, fmt):
            e = by.get(metric, {}).get(name)
            if e is None:
                return "best baseline" if best.get(metric) == name else ""
            return f"{e['mean']:+{fmt}} [{e['lo']:+{fmt}}, {e['hi']:+{fmt}}]" + (" n.s." if e["zero_in"] else "")
        for name, v in per.items():
            table.add_row(op.split(",")[0], name, str(v["n"]), f"{v['psnr'][0]:.2f}", f"{v['ssim'][0]:.3f}",
                          f"{v['lpips'][0]:.3f}", f"{v['seconds'][0]:.2f}", delta("psnr", name, ".2f"),
                          delta("lpips", name, ".3f"))
    console.print(table)


@list_app.command("solvers")
def list_solvers():
    """Solvers, what they need, and their presets."""
    from .solvers import SOLVERS

    table = Table(title="solvers (diffusion solvers first, then the classical baselines every bench table shows)")
    for col in ("solver", "kind", "needs", "presets", "what it is"):
        table.add_column(col)
    ordered = sorted(SOLVERS.items(), key=lambda item: (bool(getattr(item[1], "baseline", False))
                                                        or item[0] == "pinv", item[0]))
    for name, cls in ordered:
        baseline = bool(getattr(cls, "baseline", False)) or name == "pinv"
        needs = ", ".join(sorted(cls.needs)) or ("no prior" if baseline else "a differentiable operator")
        table.add_row(name, "baseline" if baseline else "diffusion", needs, ", ".join(cls.presets) or "-",
                      cls.description)
    console.print(table)


@list_app.command("operators")
def list_operators():
    """Operator families with their parameters and defaults."""
    import operators

    table = Table(title="operator families (spec: family:key=value,...)")
    table.add_column("family", style="bold")
    table.add_column("parameters (default)")
    table.add_column("what it is")
    for name, cls in sorted(operators.OPERATORS.items()):
        params = ", ".join(f"{k}={v.default!r}" if v.type is not str else f"{k}={v.default}"
                           for k, v in cls.params.items()) or "-"
        table.add_row(name, params, cls.description)
    console.print(table)


@list_app.command("presets")
def list_presets():
    """Named operator presets and solver presets (the papers' settings)."""
    import operators

    table = Table(title="operator presets")
    table.add_column("preset", style="bold")
    table.add_column("spec")
    table.add_column("what it reproduces")
    for name, (spec, description) in sorted(operators.PRESETS.items()):
        table.add_row(name, spec, description)
    console.print(table)
    from .solvers import SOLVERS

    table = Table(title="solver presets (--preset; by default each solver takes the preset named after the task)")
    for col in ("solver", "preset", "parameters", "what it is"):
        table.add_column(col)
    for solver_name, cls in sorted(SOLVERS.items()):
        for preset_name, values in cls.presets.items():
            params = ", ".join(f"{k}={v}" for k, v in values.items() if k != "description")
            table.add_row(solver_name, preset_name, params or "defaults", values.get("description", ""))
    console.print(table)


@list_app.command("priors")
def list_priors_command():
    """Embedded and public priors, and whether each is available here."""
    import priors

    table = Table(title="priors (use the name with --prior, or give a checkpoint path)")
    for col in ("name", "kind", "size", "domain", "available", "where"):
        table.add_column(col)
    for row in priors.list_priors():
        card = row["card"]
        size = f"{card.channels}×{card.image_size}²" if card.image_size else f"{card.channels}×any"
        if card.image_size and card.extra.get("any_size"):
            size += " (any size ÷8)"
        table.add_row(row["name"], row["kind"], size, card.domain, "yes" if row["available"] else "no",
                      row["location"])
    console.print(table)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="output folder"),
    lpips_weights: Optional[str] = typer.Option(None, "--lpips-weights", envvar="RESTORE_LPIPS_WEIGHTS"),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default)"),
):
    """Degrade the shipped sample images and restore them with the embedded priors (beside A⁺y and the classical
    baselines)."""
    from .demo import run_demo

    set_threads(threads)
    run_demo(out, console, lpips_weights=lpips_weights)


INTERRUPTED = "interrupted: finished outputs are kept, unfinished ones were not written."


def main(argv: Optional[list] = None) -> int:
    """Entry point: run the app, turning user errors into one clear sentence and exit code 2."""
    try:
        app(args=argv, prog_name="restore")  # standalone mode: usage errors exit 2 with typer's message
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130:  # typer turns Ctrl-C into Exit(130) before the handler below can see it
            err_console.print(INTERRUPTED)
        return code
    except Exception as exc:  # noqa: BLE001 - user errors become one sentence; anything else is re-raised
        if not isinstance(exc, _user_errors()):
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # '[dicom]' is not markup
        return 2
    except KeyboardInterrupt:
        err_console.print(INTERRUPTED)
        return 130
    return 0


def _user_errors() -> tuple:
    """The user-facing error types: restore's and prior errors always, operator and solver errors when their
    modules were loaded (an error of theirs can only come from a loaded module)."""
    types = [RestoreError, PriorError]
    for module, name in (("operators.spec", "OperatorError"), ("restore.solvers.base", "SolverError")):
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


def _entry() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":
    _entry()
