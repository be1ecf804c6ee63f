"""Solver benchmark: every solver × task on the embedded priors and the test sets, beside the pinv baseline.

Quality. A fixed subset of a test folder (``--limit`` images at evenly spaced positions of its sorted file list) is
measured once per task with per-image seeds (operator draws and noise from ``restore.degrade.image_seed``, as
``restore bench`` does), then every solver that supports the task restores it through ``restore.solve.run`` (the
code path of ``restore solve``/``restore bench``): PSNR / SSIM on [0, 1], LPIPS (AlexNet, via
``restore.lpips_metric``; reported as unavailable when no weights are found), seconds per image and network
evaluations (NFE). Groups of runs:

* ``--prior`` (default ``faces64``) on ``--data`` (default ``../shared/data/test/faces64``): the pixel solvers
  (dps, ddnm, daps, reddiff) on ``--tasks``;
* ``--latent-prior`` (default ``faces64-latent``) on the same images: ReSample and latent DAPS;
* ``--mri-prior`` (``brain-mri``) on ``../shared/data/test/brain_mri128``: mri-4x, mri-8x;
* ``--ct-prior`` (``ct``) on ``../shared/data/test/ct_dicom``: sparse-view CT with 60 views.
A group whose prior or data is not available is skipped with the reason printed; so is a solver × task that the
solver refuses (e.g. DDNM on CT, which has no SVD), with the solver's own sentence.

Speed.
1. Solver overhead = wall time of a solver run ÷ (its NFE × the time of one bare network evaluation at the same
   batch), where the bare evaluation includes the backward pass to the input for the evaluations a solver
   backpropagates through (all of DPS's; ReSample's guided DDIM steps). The bare evaluation is timed (median of
   ``--bare-repeats`` calls and ``--bare-seconds``, after a warm-up) right before each batch that a solver runs, on
   the very prior instance it runs, and again right after it (the mean of the two is used; their ratio flags a
   machine whose speed drifted). For latent priors the decoder/encoder passes are counted and timed too, and a
   second overhead counts them as network work. Target ≤ 1.10.
2. Batch throughput: images per second at batch 1, 4 and 16 (``--batch-sizes``) for each solver, on one task
   (``--throughput-task``, sr4) with the chosen presets and ``--throughput-steps`` steps (DAPS: annealing levels).
3. GPU (only when CUDA is available): each solver's paper preset for sr4 on the FFHQ-256 architecture
   (``priors.configs.ADM_CONFIGS['ffhq_10m']``, random weights) at batch 1 and 8; two short runs (``--gpu-steps``)
   give time = setup + per-step × steps, extrapolated to the preset's full step count; peak CUDA memory.
4. Scale (``--sections scale``, not in the default: minutes per solver on a CPU): the overhead of 1. on the
   FFHQ-256 architecture (random weights; one input channel for MRI/CT) on ``--device``, for each pixel solver's
   chosen preset on ``--scale-tasks`` (default deblur-motion, ct-sparse60, sr4): two short runs (``--scale-steps``)
   give setup + per-step time, extrapolated to the preset's full steps and divided by the full run's network time.
   On the small embedded priors an operator without an SVD costs more than the network (DAPS's Langevin steps call
   A and Aᵀ 100 times per level); this shows what the same solver code costs beside a network of the papers' size.

Usage::

    .venv/bin/python benchmarks/solvers.py                                    # everything, fast presets
    .venv/bin/python benchmarks/solvers.py --limit 16 --presets fast \\
        --lpips-weights ../shared/data/lpips/lpips_alex_v0.1.safetensors --markdown docs/benchmarks.md \\
        --json out/bench-solvers/summary.json
    .venv/bin/python benchmarks/solvers.py --prior /tmp/p/cpu64.safetensors --limit 2 --tasks sr4,inpaint-random \\
        --solvers ddnm,dps --steps-override 5                                 # a smoke run
    .venv/bin/python benchmarks/solvers.py --presets paper                    # the official presets (slow on a CPU)
    .venv/bin/python benchmarks/solvers.py --presets fast,daps=sr4,dps=default  # a mapping on top of a base

``--presets``: comma-separated; ``fast`` (dps fast, ddnm default, daps daps-100, reddiff fast, resample fast,
latent DAPS its LatentDAPS-100 task preset), ``paper`` (each solver's preset for the task, as ``restore solve``
chooses it: DPS's per-task ζ, DDNM default, DAPS-1K with the task's official settings, RED-Diff default, ReSample
default), and ``SOLVER=PRESET`` items (PRESET may be ``fast`` or ``paper``). Solvers not named get ``paper``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # solverbench
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # restore, operators, priors

import torch  # noqa: E402

from operators import Noise  # noqa: E402
from restore.bench import COLUMNS, write_report, write_results  # noqa: E402
from restore.solvers import SolverError, get_solver  # noqa: E402

from solverbench.presets import (  # noqa: E402, F401  (BEGIN, END, select_images: re-exported for the tests)
    BEGIN, DEFAULT_TASKS, END, FAST, PIXEL_SOLVERS, PRESETS_BEGIN, PRESETS_END, ROOT, SHARED, parse_presets,
    presets_markdown, select_images, solver_of, split_list, task_spec, update_presets,
)
from solverbench.quality import Context, Group, SharedPriors, prepare_group, run_quality, run_throughput  # noqa: E402
from solverbench.scale import machine_info, run_gpu, run_scale  # noqa: E402
from solverbench.tables import (  # noqa: E402
    _clean, gpu_table, overhead_tables, prior_info, quality_tables, results_markdown, run_variants, scale_table,
    summary_lists, throughput_table, update_markdown,
)


# ---------------------------------------------------------------------------------------------------------------------
# main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="faces64", help="pixel prior for the face tasks: name or checkpoint path")
    ap.add_argument("--data", default=str(SHARED / "test" / "faces64"), help="test folder for the face tasks")
    ap.add_argument("--limit", type=int, default=16, help="images per test folder, evenly spaced (0: all)")
    ap.add_argument("--limits", default="", help="per-group limits over --limit, e.g. latent=8,mri=8,ct=10")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                    help="merge the --json files of runs made side by side (e.g. one group per core) and write "
                         "--markdown / --json from them; nothing is run")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                    help=f"face tasks (default {','.join(DEFAULT_TASKS)}); names of TASKS or operator presets")
    ap.add_argument("--task-spec", action="append", default=[], metavar="NAME=SPEC",
                    help="define a task by an operator spec (repeatable)")
    ap.add_argument("--solvers", default="dps,ddnm,daps,reddiff,resample",
                    help="solvers (pinv always runs); daps also runs as latent DAPS on the latent prior")
    ap.add_argument("--presets", default="fast", help="fast | paper | SOLVER=PRESET,... (see the module doc)")
    ap.add_argument("--param", action="append", default=[], metavar="SOLVER:KEY=VALUE",
                    help="override one solver parameter on top of its preset in the quality and throughput runs, "
                         "e.g. resample:noise_stop=true (repeatable)")
    ap.add_argument("--label-suffix", default="",
                    help="appended to the solvers' labels in this run's rows (e.g. '+noise_stop'), so that runs of "
                         "one solver with other presets or parameters stay apart when combined; a suffix that "
                         "starts with '-' needs the = form: --label-suffix=-fast")
    ap.add_argument("--noise", default="0.025", help="noise σ on [0, 1] (0.025 = the papers' 0.05 on [-1, 1])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1, help="batch size of the quality runs")
    ap.add_argument("--steps-override", type=int, default=None,
                    help="set every solver's steps (DAPS: annealing levels), e.g. 5 for a smoke run")
    ap.add_argument("--latent-prior", default="faces64-latent", help="latent prior for ReSample and latent DAPS "
                                                                    "('none' to skip)")
    ap.add_argument("--mri-prior", default="brain-mri", help="prior for the MRI tasks ('none' to skip)")
    ap.add_argument("--mri-data", default=str(SHARED / "test" / "brain_mri128"))
    ap.add_argument("--mri-tasks", default="mri-4x,mri-8x")
    ap.add_argument("--ct-prior", default="ct", help="prior for the CT task ('none' to skip)")
    ap.add_argument("--ct-data", default=str(SHARED / "test" / "ct_dicom"))
    ap.add_argument("--ct-tasks", default="ct-sparse60")
    ap.add_argument("--lpips-weights", default=None,
                    help="LPIPS weights file (default: $RESTORE_LPIPS_WEIGHTS, else torchvision's cache)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench-solvers"), help="outputs, results.json, report.md")
    ap.add_argument("--resume", action="store_true",
                    help="keep outputs a previous run finished (they are left out of the overhead)")
    ap.add_argument("--markdown", default=None, help="write the results section of this file (docs/benchmarks.md), "
                                                     "and its preset table when it has one")
    ap.add_argument("--presets-table", nargs="+", default=None, metavar="MD",
                    help="only rewrite the preset table (between its markers) of these files from the solver "
                         "classes' presets, e.g. docs/benchmarks.md docs/benchmarks-paper.md; nothing is run")
    ap.add_argument("--json", default=None, help="write everything measured to this JSON file")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (recorded in the results)")
    ap.add_argument("--device", default="cpu", help="device of the quality/overhead/throughput runs")
    ap.add_argument("--sections", default="quality,throughput,gpu",
                    help="quality (with the overhead), throughput, gpu, scale (overhead on the FFHQ-256 "
                         "architecture, on --device; minutes per solver on a CPU, so not in the default)")
    ap.add_argument("--bare-repeats", type=int, default=5,
                    help="bare network evaluations timed before and after each batch (median; at least this many)")
    ap.add_argument("--bare-seconds", type=float, default=0.5,
                    help="... and at least this many seconds of them, before and after")
    ap.add_argument("--batch-sizes", default="1,4,16", help="batch sizes of the throughput section")
    ap.add_argument("--throughput-task", default="sr4")
    ap.add_argument("--throughput-steps", type=int, default=10,
                    help="steps of the throughput runs (DAPS: annealing levels)")
    ap.add_argument("--gpu-batches", default="1,8")
    ap.add_argument("--gpu-steps", default="2,4", help="the two short step counts the GPU times extrapolate from")
    ap.add_argument("--scale-tasks", default="deblur-motion,ct-sparse60,sr4",
                    help="tasks of the scale section (CT/MRI on a one-channel network)")
    ap.add_argument("--scale-steps", default="2,4",
                    help="the two short step counts the scale section extrapolates from (DAPS: annealing levels)")
    ap.add_argument("--scale-repeats", type=int, default=3,
                    help="bare evaluations timed before and after each scale run (median)")
    return ap


def parse_solver_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``SOLVER:KEY=VALUE`` items → {label: {key: value}}; an unknown solver or parameter ends here, before any
    work."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        label, sep, rest = item.partition(":")
        key, eq, value = rest.partition("=")
        label, key = label.strip(), key.strip()
        if not sep or not eq or not key:
            raise SystemExit(f"--param takes SOLVER:KEY=VALUE (e.g. resample:noise_stop=true), got '{item}'.")
        if label not in FAST:
            raise SystemExit(f"--param: unknown solver '{label}'; use one of {', '.join(FAST)}.")
        try:
            get_solver(solver_of(label), **{key: value.strip()})
        except SolverError as exc:
            raise SystemExit(f"--param {item}: {exc}") from None
        out.setdefault(label, {})[key] = value.strip()
    return out


def parse_limits(text: str) -> dict[str, int]:
    out = {}
    for item in split_list(text):
        key, sep, value = item.partition("=")
        if not sep or key not in ("faces", "latent", "mri", "ct") or not value.strip().isdigit():
            raise SystemExit(f"--limits takes GROUP=N items with GROUP one of faces, latent, mri, ct; got '{item}'.")
        out[key] = int(value)
    return out


def combine(paths: list[str]) -> dict:
    """One result from the --json files of several runs (e.g. the face group on one core and the other groups on
    the other): rows, overhead, throughput, skipped and priors are concatenated (a solver × task that a later file
    ran again replaces the earlier file's rows and timings, a solver's throughput measured again likewise); the
    configuration is the first
    run's, with the union of the solvers, tasks and sections; the commands and machines of all runs are kept."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(results[0])
    merged["config"] = dict(results[0]["config"])
    for key in ("rows", "overhead", "throughput", "skipped", "priors"):
        merged[key] = [item for r in results for item in r.get(key, [])]
    # a later run that reran a solver on a task (e.g. after a fix) replaces the earlier rows and timings of it
    last = {}
    for i, r in enumerate(results):
        for row in r.get("rows", []):
            last[(row["group"], row["task"], row["solver"])] = i
    merged["rows"] = [row for i, r in enumerate(results) for row in r.get("rows", [])
                      if last[(row["group"], row["task"], row["solver"])] == i]
    merged["overhead"] = [o for i, r in enumerate(results) for o in r.get("overhead", [])
                          if last.get((o["group"], o["task"], o["solver"]), i) == i]
    # likewise a solver's throughput on a group: the last run that measured it
    last_tp = {(t["group"], t["solver"]): i for i, r in enumerate(results) for t in r.get("throughput", [])}
    merged["throughput"] = [t for i, r in enumerate(results) for t in r.get("throughput", [])
                            if last_tp[(t["group"], t["solver"])] == i]
    seen, priors = set(), []
    for p in merged["priors"]:  # a group that one run skipped and another ran is shown once, as run
        if p.get("available") or not any(q.get("available") and q["group"] == p["group"] for q in merged["priors"]):
            if (p["group"], p.get("name") or p.get("given")) not in seen:
                seen.add((p["group"], p.get("name") or p.get("given")))
                priors.append(p)
    merged["priors"] = priors
    ran = {p["group"] for p in priors if p.get("available")}
    merged["skipped"] = [s for s in merged["skipped"] if not (s["task"] == "*" and s["group"] in ran)]
    merged["skipped"] = list({(s["group"], s["task"], s["solver"], s["reason"]): s  # the same skip once
                              for s in merged["skipped"]}.values())
    cfg = merged["config"]
    for key in ("solvers", "sections"):
        cfg[key] = list(dict.fromkeys(v for r in results for v in r["config"].get(key, [])))
    cfg["variant_notes"] = list(dict.fromkeys(note for r in results for note in run_variants(r["config"])))
    cfg["tasks"] = {k: v for r in results for k, v in r["config"].get("tasks", {}).items()}
    cfg["limits"] = {k: v for r in results for k, v in (r["config"].get("limits") or {}).items()}
    merged["command"] = " ; ".join(r["command"] for r in results)
    merged["gpu"] = next((r["gpu"] for r in results if r.get("gpu") and not r["gpu"].get("skipped_reason")),
                         results[0].get("gpu", {}))
    # the scale section: rows of all runs, a solver × task measured again replacing the earlier measurement
    scales = [r["scale"] for r in results if r.get("scale", {}).get("rows") or r.get("scale", {}).get("skipped")]
    merged["scale"] = dict(scales[-1]) if scales else results[0].get("scale", {})
    if scales:
        last_sc = {(row["solver"], row["task"]): i for i, sc in enumerate(scales) for row in sc["rows"]}
        merged["scale"]["rows"] = [row for i, sc in enumerate(scales) for row in sc["rows"]
                                   if last_sc[(row["solver"], row["task"])] == i]
        merged["scale"]["skipped"] = list({(x["solver"], x["task"]): x for sc in scales
                                           for x in sc.get("skipped", [])}.values())
    md, summary = quality_tables(merged["rows"])
    merged.update(quality_markdown=md, summary=summary_lists(summary))
    return merged


def main(argv: list[str] | None = None, log=print) -> dict:
    args = build_parser().parse_args(argv)
    if args.presets_table:
        text = presets_markdown()
        for path in args.presets_table:
            if not update_presets(Path(path), text):
                raise SystemExit(f"--presets-table: {path} has no preset-table markers ({PRESETS_BEGIN} … "
                                 f"{PRESETS_END}).")
            log(f"wrote the preset table of {path}")
        return {"presets_table": text}
    if args.combine:
        return write_outputs(combine(args.combine), args, log)
    torch.set_num_threads(max(1, args.threads))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = str(torch.device(args.device))
    sections = split_list(args.sections)
    bad = set(sections) - {"quality", "overhead", "throughput", "gpu", "scale"}
    if bad:
        raise SystemExit(f"--sections: unknown {', '.join(sorted(bad))}; use quality, throughput, gpu, scale.")
    try:
        scale_steps = tuple(int(s) for s in split_list(args.scale_steps))
    except ValueError:
        scale_steps = ()
    if len(scale_steps) != 2 or scale_steps[0] == scale_steps[1] or min(scale_steps) < 1:
        raise SystemExit("--scale-steps needs two different positive step counts, e.g. 2,4.")
    args.scale_steps = scale_steps
    if "overhead" in sections:
        sections = [s for s in sections if s != "overhead"] + ([] if "quality" in sections else ["quality"])
    presets = parse_presets(args.presets)
    extra = {}
    for item in args.task_spec:
        if "=" not in item:
            raise SystemExit(f"--task-spec must look like NAME=SPEC, got '{item}'.")
        name, spec = item.split("=", 1)
        extra[name.strip()] = spec.strip()
    tasks = split_list(args.tasks)
    for t in (tasks + split_list(args.mri_tasks) + split_list(args.ct_tasks) + [args.throughput_task]
              + split_list(args.scale_tasks)):
        task_spec(t, extra)  # unknown names end here, before any work
    labels = split_list(args.solvers)
    for label in labels:
        if label not in FAST and label != "pinv":
            raise SystemExit(f"--solvers: unknown solver '{label}'; use some of {', '.join(FAST)}.")
    args.param = parse_solver_params(args.param)
    batch_sizes = [int(b) for b in split_list(args.batch_sizes)]
    gpu_batches = tuple(int(b) for b in split_list(args.gpu_batches))
    gpu_steps = tuple(int(s) for s in split_list(args.gpu_steps))
    if len(gpu_steps) != 2 or gpu_steps[0] == gpu_steps[1]:
        raise SystemExit("--gpu-steps needs two different step counts, e.g. 2,4.")
    with SharedPriors():
        return _benchmark(args, argv, sections, presets, extra, tasks, labels, batch_sizes, gpu_batches, gpu_steps,
                          log)


def _benchmark(args, argv, sections, presets, extra, tasks, labels, batch_sizes, gpu_batches, gpu_steps,
               log) -> dict:
    pixel = [s for s in labels if s in PIXEL_SOLVERS]
    latent = [s for s in ("resample", "latent-daps") if s in labels or (s == "latent-daps" and "daps" in labels)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    noise = Noise.parse(args.noise)
    ctx = Context(out=out, noise=noise, seed=args.seed, batch_size=max(1, args.batch_size), steps=args.steps_override,
                  presets=presets, device=args.device, lpips_weights=args.lpips_weights, resume=args.resume,
                  bare_repeats=args.bare_repeats, bare_seconds=args.bare_seconds, log=log, extra_tasks=extra,
                  params=args.param, label_suffix=args.label_suffix)
    groups = [Group("faces", args.prior, Path(args.data), tasks, pixel),
              Group("latent", args.latent_prior, Path(args.data), tasks, latent),
              Group("mri", args.mri_prior, Path(args.mri_data), split_list(args.mri_tasks), pixel),
              Group("ct", args.ct_prior, Path(args.ct_data), split_list(args.ct_tasks), pixel)]
    groups = [g for g in groups if g.labels]
    limits = parse_limits(args.limits)
    for g in groups:
        prepare_group(g, limits.get(g.key, args.limit), args.device, out)
        log(f"{g.key}: " + (f"skipped — {g.skip}" if g.skip else
                            f"prior {g.prior_obj.card.name}, {len(g.images)} images of {g.data}"))

    config = dict(presets=presets, solvers=pixel + latent, steps_override=args.steps_override, noise=args.noise,
                  noise_sigma=getattr(noise, "std", 0.0), seed=args.seed, limit=args.limit, limits=limits,
                  batch_size=ctx.batch_size,
                  tasks={t: task_spec(t, extra) for g in groups for t in g.tasks}, sections=sections,
                  batch_sizes=batch_sizes, throughput_task=args.throughput_task,
                  throughput_steps=args.throughput_steps, bare_repeats=args.bare_repeats,
                  bare_seconds=args.bare_seconds, gpu_batches=list(gpu_batches), gpu_steps=list(gpu_steps),
                  scale_tasks=split_list(args.scale_tasks), scale_steps=list(args.scale_steps),
                  params=args.param, label_suffix=args.label_suffix,
                  lpips_weights=args.lpips_weights or os.environ.get("RESTORE_LPIPS_WEIGHTS"))
    command = "python benchmarks/solvers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), command=command.strip(),
                        machine=machine_info(args.device), versions=_versions(), config=config,
                        priors=[prior_info(g) for g in groups], rows=[], overhead=[], throughput=[],
                        skipped=[dict(group=g.key, prior=g.prior, task="*", solver="*", reason=g.skip)
                                 for g in groups if g.skip],
                        quality_markdown=[], summary={}, gpu={}, scale={})

    if "quality" in sections:
        rows, overhead, skipped = run_quality(groups, ctx)
        result.update(rows=rows, overhead=overhead)
        result["skipped"] += skipped
        if rows:
            flat = [{k: r.get(k) for k in COLUMNS} | {"operator": r["task"], "solver": r["solver"]} for r in rows]
            write_results(out, flat)
            write_report(out, flat)
        md, summary = quality_tables(rows)
        result.update(quality_markdown=md, summary=summary)
        log("\n## Quality\n\n" + "\n".join(md))
        log("## Solver overhead\n\n" + "\n".join(overhead_tables(overhead)))

    if "throughput" in sections:
        tp, tp_skipped = run_throughput(groups, ctx, args.throughput_task, batch_sizes, args.throughput_steps)
        result["throughput"] = tp
        result["skipped"] += tp_skipped
        log("## Batch throughput\n\n" + "\n".join(throughput_table(tp, batch_sizes)))

    if "gpu" in sections:
        if torch.cuda.is_available():
            result["gpu"] = run_gpu(pixel + latent, noise, device="cuda", batches=gpu_batches, short=gpu_steps,
                                    data=SHARED / "test" / "ffhq256", log=log)
        else:
            result["gpu"] = dict(skipped_reason="no CUDA device on this machine (torch.cuda.is_available() is "
                                                "False); run the script on a GPU machine for this section")
        log("## GPU\n\n" + "\n".join(gpu_table(result["gpu"])))

    if "scale" in sections:
        result["scale"] = run_scale(pixel, presets, noise, split_list(args.scale_tasks), extra, short=args.scale_steps,
                                    device=args.device, repeats=args.scale_repeats,
                                    data=SHARED / "test" / "ffhq256", log=log)
        log("## Solver overhead at the papers' scale\n\n" + "\n".join(scale_table(result["scale"])))

    result["summary"] = summary_lists(result["summary"])
    return write_outputs(result, args, log)


def write_outputs(result: dict, args, log) -> dict:
    """The results section of --markdown and the --json file, when asked for."""
    if args.markdown:
        update_markdown(Path(args.markdown), results_markdown(result))
        log(f"wrote the results section of {args.markdown}")
        if update_presets(Path(args.markdown)):
            log(f"wrote the preset table of {args.markdown}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_clean(result), indent=1, ensure_ascii=False) + "\n")
        log(f"wrote {args.json}")
    return result


def _versions() -> dict:
    from restore.solve import versions

    return versions()


if __name__ == "__main__":
    main()
