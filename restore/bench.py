"""``restore bench``: clean images → measurements (fixed seeds) → every solver (always with the ``pinv`` baseline) →
results.csv / results.json (one row per image × operator × solver), report.md (mean ± std, best per column in bold),
an image grid per operator and a PSNR-vs-seconds plot. ``--samples 1,4`` runs every stochastic solver once per K
(rows ``ddnm`` and ``ddnm (mean of 4)``; deterministic ones once). ``--shard i/n`` runs every n-th image for several
machines; ``restore bench merge`` joins the parts and writes the report for all of them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import operators
from operators import Noise

from .degrade import degrade_one, image_seed
from .io import RestoreError, find_images, load_image, preview, save_image, to_uint8, write_json
from .report import gains
from .solve import Job, check_counts, run
from .solvers.base import SolverError, check_estimate

if TYPE_CHECKING:
    from .acceleration import Acceleration

COLUMNS = ["image", "operator", "solver", "preset", "psnr", "ssim", "lpips", "rel_l2", "misfit", "noise_level",
           "seconds", "nfe", "status", "output"]
#: provenance columns after the metrics (results.csv holds dicts as JSON)
PROVENANCE = ["baseline", "samples", "estimate", "seed", "noise_sigma", "prior", "prior_sha256", "params",
              "lpips_variant", "device", "threads", "versions"]


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise RestoreError(f"--shard must look like i/n (e.g. 0/4), got '{text}'.") from None
    if not 0 <= i < n:
        raise RestoreError(f"--shard {text}: i must be between 0 and n−1.")
    return i, n


def parse_samples(text: str) -> list[int]:
    """``--samples``: '4' → [4]; '1,4' → [1, 4] (each K a row of the table; repeats dropped)."""
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RestoreError(f"--samples takes a number or a comma-separated list such as 1,4, got '{text}'.") from None
    if not counts:
        raise RestoreError("--samples takes a number or a comma-separated list such as 1,4, got nothing.")
    for k in counts:
        check_counts(samples=k)
    return list(dict.fromkeys(counts))


def sample_label(label: str, samples: int, estimate: str) -> str:
    """The table label of a K-sample run: 'ddnm' for K = 1 (one sample, whatever the estimate), 'ddnm (mean of 4)'
    for K = 4."""
    return label if samples == 1 else f"{label} ({estimate} of {samples})"


def bench(images: list[str], specs: list[str], solvers: list[str], prior: str, out: Path, noise: str = "0",
          limit: int = 0, preset: str | None = None, steps: int | None = None, seed: int = 0,
          shard: str | None = None, batch_size: int = 1, device: str = "auto", lpips_weights: str | None = None,
          progress: Callable[[str, int, int], None] | None = None, baselines: str = "auto",
          threads: int = 0, samples: Sequence[int] = (1,), estimate: str = "mean",
          accel: "Acceleration | None" = None) -> list[dict]:
    """Every solver label (``name`` or ``name:preset``) and the classical baselines on every operator, beside pinv.

    ``baselines``: "auto" (every baseline that takes the task), "none", or a comma-separated list. ``limit`` takes
    that many images spread evenly over the sorted folder (not its first files). ``samples``: each stochastic solver
    runs once per K in it, K > 1 giving the ``estimate`` of K samples under its own label (``sample_label``);
    deterministic solvers (pinv, the baselines) run once."""
    import torch

    from .solvers import SOLVERS

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RestoreError(f"the output '{out}' is a file; give a folder for --out.")
    samples = list(dict.fromkeys([samples] if isinstance(samples, int) else samples))
    for k in samples:
        check_counts(samples=k)
    check_estimate(estimate)
    specs = [str(operators.parse(s)) for s in specs]
    labels = ["pinv"] + [s for s in dict.fromkeys(solvers) if s != "pinv"]
    for label in labels:
        solver_of_label(label)  # unknown names refused before any work
    files = [(p, r) for p, r in find_images(images, exclude=out) if p.suffix.lower() != ".npz"]
    files = spread(files, limit)
    i, n = parse_shard(shard)
    files = files[i::n]
    if not files:
        raise RestoreError("no images to benchmark in this shard; check the inputs, --limit and --shard.")
    shard_dir = out if n == 1 else out / f"shard-{i}-of-{n}"
    noise_model = Noise.parse(noise)
    rows: list[dict] = []
    the_prior = None
    common = dict(noise_sigma=noise_model.std, lpips_variant="alex v0.1 (lpips package)",
                  threads=threads or torch.get_num_threads(), versions=_versions())
    for spec_index, spec in enumerate(specs):
        task_dir = shard_dir / f"op{spec_index}"
        jobs = []
        for path, rel in files:
            clean = load_image(path)
            s = image_seed(seed, rel.as_posix())
            m = degrade_one(clean, spec, noise_model, s, source=str(path.resolve()))
            save_image(task_dir / "measurements" / rel.with_suffix(".png"), preview(m.y[0]))
            jobs.append(Job(path, rel, m, reference=clean, reference_path=str(path)))
        task_labels = labels + [b for b in baselines_for(spec, jobs[0].m.image_shape, baselines) if b not in labels]
        for label in task_labels:
            name, label_preset = solver_of_label(label)
            is_baseline = name == "pinv" or is_baseline_solver(name)
            if not is_baseline and the_prior is None:
                import priors

                the_prior = priors.resolve(prior, device=_device(device))  # once for every solver and task
            # a deterministic solver (pinv, the baselines) gives K identical samples: it runs once, whatever the K's
            for k in (samples if SOLVERS[name].stochastic else [1]):
                shown = sample_label(label, k, estimate)
                folder = _slug_label(label) + ("" if k == 1 else f"-{estimate}{k}")
                try:
                    result_rows = run(jobs, name, prior if is_baseline else the_prior, task_dir / folder,
                                      preset=None if is_baseline else (label_preset or preset),
                                      steps=None if is_baseline else steps, samples=k, estimate=estimate,
                                      batch_size=batch_size, device=device, overwrite=False,
                                      lpips_weights=lpips_weights, progress=progress, accel=accel)
                except SolverError as exc:  # refused before any work (e.g. DDNM on a blur without an SVD): said
                    rows += [{"image": str(job.rel), "operator": spec, "solver": shown, "baseline": is_baseline,
                              "samples": k, "estimate": estimate, "status": "refused", "error": str(exc),
                              "seed": job.m.seed} for job in jobs]
                    continue
                for job, r in zip(jobs, result_rows):
                    side = json.loads(Path(r["output"]).with_suffix(".json").read_text()) \
                        if r.get("status") in ("written",) or r.get("skipped") else {}
                    if r.get("skipped"):  # resumed: read the finished result back
                        r = dict(r, status="written", preset=side["preset"],
                                 seconds=side["cost"]["seconds_per_image"], nfe=side["cost"]["nfe"],
                                 **(side.get("data_fit") or {}), **side["metrics"])
                    row = {c: r.get(c) for c in COLUMNS} | {"image": str(job.rel), "operator": spec, "solver": shown,
                                                            "baseline": is_baseline, "seed": job.m.seed,
                                                            "samples": side.get("samples", k),
                                                            "estimate": side.get("estimate", estimate)}
                    if side:
                        row.update(prior=side["prior"].get("name"), prior_sha256=side["prior"].get("sha256"),
                                   params=side.get("params"), device=side.get("device"))
                    rows.append(row | common)
    write_results(shard_dir, rows)
    if n == 1:
        write_report(out, rows)
    return rows


def spread(files: list, limit: int) -> list:
    """``limit`` items at evenly spaced positions of ``files`` (item i·len//limit for i = 0 … limit−1, the selection
    of benchmarks/solvers.py); all of them for limit 0."""
    if not limit or limit >= len(files):
        return list(files)
    return [files[i * len(files) // limit] for i in range(limit)]


def solver_of_label(label: str) -> tuple[str, str | None]:
    """'dps:fast' → ('dps', 'fast'); 'ddnm' → ('ddnm', None); an unknown solver or preset is refused."""
    from .solvers import get_solver

    name, _, preset = label.partition(":")
    get_solver(name, preset=preset or None)
    return name, preset or None


def is_baseline_solver(name: str) -> bool:
    from .solvers import SOLVERS

    return bool(getattr(SOLVERS.get(name), "baseline", False))


def baselines_for(spec: str, image_shape, choice: str = "auto") -> list[str]:
    """The classical baselines that take this operator: all of them ("auto"), none, or those of the ones named."""
    from .solvers import SOLVERS, SolverError

    if choice in ("none", ""):
        return []
    names = sorted(n for n, cls in SOLVERS.items() if getattr(cls, "baseline", False))
    if choice != "auto":  # the named ones, each on the tasks it takes
        wanted = [n.strip() for n in choice.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise RestoreError(f"--baselines: unknown baseline {', '.join(unknown)}; choose from "
                               f"{', '.join(names) or 'none'} (or auto, none).")
        names = wanted
    from .solve import _NoPrior

    op = operators.build(spec, tuple(image_shape), seeds=[0])
    fits = []
    for name in names:
        try:
            SOLVERS[name]().check(op, _NoPrior(image_shape[0]))
        except (SolverError, RestoreError, operators.OperatorError):
            continue
        fits.append(name)
    return fits


def _slug_label(label: str) -> str:
    return label.replace(":", "@")


def _device(device: str) -> str:
    import torch

    return "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)


def _versions() -> dict:
    from .solve import versions

    return versions()


def write_results(folder: Path, rows: list[dict]) -> None:
    write_json(folder / "results.json", rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS + PROVENANCE, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in r.items()}
                     for r in rows)
    path = folder / "results.csv"
    from .io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def merge(parts: list[str], out: Path) -> list[dict]:
    rows = []
    for part in parts:
        p = Path(part)
        files = sorted(p.rglob("results.json")) if p.is_dir() else [p]
        if not files:
            raise RestoreError(f"'{part}' holds no results.json; give the shard folders written by 'restore bench'.")
        for f in files:
            rows += json.loads(f.read_text())
    seen = set()
    unique = []
    for r in rows:
        key = (r["image"], r["operator"], r["solver"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    write_results(Path(out), unique)
    write_report(Path(out), unique)
    return unique


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict]) -> dict:
    """{operator: {solver: {metric: (mean, std)}}} over written rows."""
    table: dict = {}
    for r in rows:
        if r.get("status") != "written":
            continue
        table.setdefault(r["operator"], {}).setdefault(r["solver"], []).append(r)
    out: dict = {}
    for op, per_solver in table.items():
        out[op] = {}
        for solver, rs in per_solver.items():
            out[op][solver] = {m: _mean_std([r.get(m) for r in rs]) for m in ("psnr", "ssim", "lpips", "seconds",
                                                                                "nfe")}
            out[op][solver]["n"] = len(rs)
    return out


def write_report(out: Path, rows: list[dict]) -> None:
    summary = summarise(rows)
    gain = gains(rows)
    lines = ["# restore bench report", "",
             "Mean ± standard deviation over the images. PSNR/SSIM on [0, 1] (data range 1, scikit-image); LPIPS "
             "AlexNet (lower is better); seconds per image on this machine; NFE = network evaluations. Best per "
             "column in **bold**.", ""]
    for op, per_solver in summary.items():
        lines += [f"## `{op}`", "", "| solver | n | PSNR ↑ | SSIM ↑ | LPIPS ↓ | s/img | NFE |",
                  "|---|---|---|---|---|---|---|"]
        best = {m: (max if m in ("psnr", "ssim") else min)(
            (v[m][0] for v in per_solver.values() if not math.isnan(v[m][0])), default=math.nan)
            for m in ("psnr", "ssim", "lpips")}
        for solver, v in per_solver.items():
            cells = []
            for m, fmt in (("psnr", ".2f"), ("ssim", ".3f"), ("lpips", ".3f")):
                mean, std = v[m]
                text = "–" if math.isnan(mean) else f"{mean:{fmt}} ± {std:{fmt}}"
                cells.append(f"**{text}**" if not math.isnan(mean) and mean == best[m] else text)
            lines.append(f"| {solver} | {v['n']} | " + " | ".join(cells)
                         + f" | {v['seconds'][0]:.2f} | {v['nfe'][0]:.0f} |")
        lines.append("")
        lines += _gain_lines(gain.get(op, {}))
        grid = _grid(out, op, rows)
        if grid:
            lines += [f"![grid]({grid.relative_to(out).as_posix()})", ""]
    plot = _plot(out, summary)
    if plot:
        lines += ["## PSNR against time", "", f"![psnr vs seconds]({plot.relative_to(out).as_posix()})", ""]
    from .io import atomic_path
    from .report import write_reports

    refused = {(r["operator"], r["solver"]): r.get("error", "") for r in rows if r.get("status") == "refused"}
    if refused:
        lines += ["## Refused (the solver said why before any work)", ""]
        lines += [f"- `{op.split(',')[0]}` × {solver}: {why}" for (op, solver), why in refused.items()] + [""]
    lines += ["Also here: `report.html` (image grids with zoomed details, sortable per-image table, PSNR and LPIPS "
              "against time) and `report.tex` (booktabs tables); `restore bench report DIR` redraws all three.", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_reports(out, rows)


def _gain_lines(per_metric: dict) -> list[str]:
    """The 'gain over the best baseline' table of one task (markdown)."""
    if not per_metric or not any(v["rows"] for v in per_metric.values()):
        return []
    p, l = per_metric.get("psnr"), per_metric.get("lpips")
    head = (f"Gain over the best baseline (PSNR: **{p['best']}**, {p['best_mean']:.2f} dB"
            + (f"; LPIPS: **{l['best']}**, {l['best_mean']:.3f}" if l else "")
            + "): paired per-image differences, mean [95% interval]; positive is better; *n.s.* where the interval "
              "contains 0.")
    lines = [head, "", "| solver | n | ΔPSNR dB | ΔLPIPS (reduction) |", "|---|---|---|---|"]
    by_solver: dict = {}
    for metric, v in per_metric.items():
        for e in v["rows"]:
            by_solver.setdefault(e["solver"], {})[metric] = e

    def cell(e, fmt):
        if e is None:
            return "–"
        text = f"{e['mean']:+{fmt}} [{e['lo']:+{fmt}}, {e['hi']:+{fmt}}]"
        return text + " *n.s.*" if e["zero_in"] else text
    for solver, v in by_solver.items():
        n = (v.get("psnr") or v.get("lpips"))["n"]
        lines.append(f"| {solver} | {n} | {cell(v.get('psnr'), '.2f')} | {cell(v.get('lpips'), '.3f')} |")
    return lines + [""]


def _grid(out: Path, op: str, rows: list[dict], max_images: int = 4) -> Path | None:
    """Rows: images (labelled); columns: ground truth, measurement preview, then each solver's output (labelled),
    with PSNR and LPIPS under every restored tile."""
    from PIL import Image, ImageDraw, ImageFont

    mine = [r for r in rows if r["operator"] == op and r.get("status") == "written"]
    images = list(dict.fromkeys(r["image"] for r in mine))[:max_images]
    solvers = list(dict.fromkeys(r["solver"] for r in mine))
    if not images:
        return None
    size, head, foot, side = 96, 18, 28, 90
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    columns = ["ground truth", "measurement"] + solvers
    canvas = Image.new("RGB", (side + size * len(columns), head + (size + foot) * len(images)), "white")
    draw = ImageDraw.Draw(canvas)
    for x, name in enumerate(columns):
        draw.text((side + x * size + 3, 3), name[:16], fill="black", font=font)
    from .report import _measurement_preview

    for y, image in enumerate(images):
        by_solver = {r["solver"]: r for r in mine if r["image"] == image}
        any_row = next(iter(by_solver.values()))
        truth = json.loads(Path(any_row["output"]).with_suffix(".json").read_text())["reference"] or ""
        top = head + y * (size + foot)
        draw.text((3, top + size // 2 - 6), Path(image).name[:14], fill="black", font=font)
        tiles = [(Path(truth), None), (_measurement_preview(any_row["output"], image), None)]
        tiles += [(Path(by_solver[s]["output"]), by_solver[s]) if s in by_solver else (None, None) for s in solvers]
        for x, (path, r) in enumerate(tiles):
            if path is not None and Path(path).is_file():
                tile = to_uint8(load_image(path))  # any input format (DICOM, 16-bit, NPY), as the metrics saw it
                canvas.paste(Image.fromarray(tile).convert("RGB").resize((size, size)), (side + x * size, top))
            if r is not None:
                psnr_text = "–" if r.get("psnr") is None else f"{r['psnr']:.2f} dB"
                lp = r.get("lpips")
                lp_text = "" if lp is None or (isinstance(lp, float) and math.isnan(lp)) else f"LPIPS {lp:.3f}"
                draw.text((side + x * size + 3, top + size + 2), psnr_text, fill="black", font=font)
                draw.text((side + x * size + 3, top + size + 14), lp_text, fill="black", font=font)
    path = out / f"grid_{_slug(op)}.png"
    with _atomic(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _plot(out: Path, summary: dict) -> Path | None:
    """PSNR against seconds per image, one point per (operator, solver): an SVG with labelled axes and tick values
    (restore.report.pareto_svg)."""
    from .report import pareto_svg

    points = [(solver, op, v["seconds"][0], v["psnr"][0]) for op, per in summary.items() for solver, v in per.items()]
    svg = pareto_svg(points, "PSNR dB")
    if not svg:
        return None
    path = out / "psnr_vs_seconds.svg"
    with _atomic(path) as tmp:
        tmp.write_text(svg)
    return path


def _slug(text: str) -> str:
    import hashlib

    return "".join(c if c.isalnum() else "_" for c in text.split(",")[0])[:40] + "_" + \
        hashlib.sha1(text.encode()).hexdigest()[:6]


def _atomic(path: Path):
    from .io import atomic_path

    return atomic_path(path)


__all__ = ["bench", "gains", "merge", "parse_shard", "spread", "summarise"]
