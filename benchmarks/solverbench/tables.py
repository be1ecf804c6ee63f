"""Markdown tables and the results section of the docs from a benchmark result; JSON cleaning."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from restore.bench import summarise

from .presets import BEGIN, END, OVERHEAD_TARGET, ROOT
from .quality import Group
from .scale import extrapolate


def prior_info(group: Group) -> dict:
    from priors.base import sha256_file

    info = dict(group=group.key, given=group.prior, available=not group.skip, skip=group.skip or None)
    if group.prior_obj is None:
        return info
    card = group.prior_obj.card
    sha = card.sha256
    if not sha and Path(group.prior).is_file():
        sha = sha256_file(group.prior)
    info.update(name=card.name, sha256=sha, training_steps=card.extra.get("steps"),
                parameters=card.extra.get("parameters") or sum(p.numel() for p in group.prior_obj.parameters()),
                image_size=card.image_size, channels=card.channels, latent=bool(card.latent),
                train_seconds=card.extra.get("train_seconds"), train_hardware=card.extra.get("hardware"),
                images=[img.rel for img in group.images], data=_shown_path(group.data))
    return info


def _shown_path(path: Path) -> str:
    """A test folder as the docs should show it: relative to the repository when it is beside it (../shared/...)."""
    try:
        return os.path.relpath(Path(path).resolve(), ROOT) if Path(path).resolve().is_relative_to(ROOT.parent) \
            else str(path)
    except ValueError:
        return str(path)


def _fmt(mean: float, std: float, fmt: str) -> str:
    return "–" if mean is None or math.isnan(mean) else f"{mean:{fmt}} ± {std:{fmt}}"


def quality_tables(rows: list[dict]) -> tuple[list[str], dict]:
    """Markdown tables per task (mean ± std, best in bold) and the summary {task: {solver: {...}}}. The latent group
    (its own, smaller subset of the faces) gets its own tables, "TASK (latent)", with its own pinv rows."""
    def key(r: dict) -> str:
        return f"{r['task']} (latent)" if r.get("group") == "latent" else r["task"]

    rows = [dict(r, task_key=key(r)) for r in rows]
    relabelled = [dict(r, operator=r["task_key"], solver=r["solver"]) for r in rows]
    summary = summarise(relabelled)
    lines: list[str] = []
    for task, per_solver in summary.items():
        mine = [r for r in rows if r["task_key"] == task]
        spec = mine[0]["spec"]
        lines += [f"#### {task} — `{spec}`", ""]
        lines += ["| solver | preset | prior | n | PSNR ↑ | SSIM ↑ | LPIPS ↓ | s/img | NFE |",
                  "|---|---|---|---|---|---|---|---|---|"]
        best = {m: (max if m in ("psnr", "ssim") else min)(
            (v[m][0] for v in per_solver.values() if not math.isnan(v[m][0])), default=math.nan)
            for m in ("psnr", "ssim", "lpips")}
        for label, v in per_solver.items():
            of = [r for r in mine if r["solver"] == label]
            total = len(of)
            presets = sorted({r["preset"] for r in of if r["preset"]}) or ["–"]
            priors_used = "–" if label == "pinv" else of[0]["prior"]
            cells = []
            for m, fmt in (("psnr", ".2f"), ("ssim", ".3f"), ("lpips", ".3f")):
                mean, std = v[m]
                text = _fmt(mean, std, fmt)
                cells.append(f"**{text}**" if not math.isnan(mean) and mean == best[m] else text)
            n = f"{v['n']}" if v["n"] == total else f"{v['n']} of {total}"
            lines.append(f"| {label} | {', '.join(presets)} | {priors_used} | {n} | " + " | ".join(cells)
                         + f" | {v['seconds'][0]:.3g} | {v['nfe'][0]:.0f} |")
        failed = [r for r in mine if r["status"] != "written"]
        if failed:
            lines += ["", f"Failed: " + "; ".join(f"{r['solver']} on {r['image']} ({r.get('error') or r['status']})"
                                                   for r in failed[:5])]
        reasons = {r["lpips_unavailable"] for r in mine if r.get("lpips_unavailable")}
        if reasons:
            lines += ["", f"LPIPS unavailable: {sorted(reasons)[0]}"]
        lines.append("")
    return lines, summary


def overhead_tables(overhead: list[dict]) -> list[str]:
    """Per solver × task × batch size: NFE, bare evaluation times, seconds per batch and the overhead; then per
    solver over all its runs, against the target. For latent priors also the overhead when the autoencoder's passes
    (counted, and timed bare like the network) are counted as network work too."""
    if not overhead:
        return ["No overhead measured (the quality section ran no solver).", ""]
    with_ae = any("overhead_with_autoencoder" in o for o in overhead)
    head = ("| solver | task | preset | batch | runs | NFE (backprop) | bare eval ms (fwd / fwd+bwd) | "
            "bare after/before | s per batch | overhead (median, max) |")
    lines = [head + (" decoder passes (backprop), encoder passes | overhead counting them |" if with_ae else ""),
             "|---" * (10 + 2 * with_ae) + "|"]
    by: dict[tuple, list[dict]] = {}
    for o in overhead:
        by.setdefault((o["solver"], o["task"], o["preset"], o["batch"]), []).append(o)
    for (solver, task, preset, batch), runs in by.items():
        ov = [o["overhead"] for o in runs]
        fb = [o["bare_fwd_bwd_s"] for o in runs if o["bare_fwd_bwd_s"]]
        bare = f"{1e3 * statistics.median(o['bare_fwd_s'] for o in runs):.1f}" + (
            f" / {1e3 * statistics.median(fb):.1f}" if fb else "")
        drift = [o["bare_drift"] for o in runs]
        line = (f"| {solver} | {task} | {preset or '–'} | {batch} | {len(runs)} | {runs[0]['nfe']} "
                f"({runs[0]['nfe_backprop']}) | {bare} | {min(drift):.2f}–{max(drift):.2f} | "
                f"{statistics.median(o['seconds'] for o in runs):.3g} | {statistics.median(ov):.2f}, {max(ov):.2f} |")
        if with_ae:
            if "overhead_with_autoencoder" in runs[0]:
                ova = [o["overhead_with_autoencoder"] for o in runs]
                line += (f" {runs[0]['decoder_passes'] + runs[0]['decoder_passes_backprop']} "
                         f"({runs[0]['decoder_passes_backprop']}), {runs[0]['encoder_passes']} | "
                         f"{statistics.median(ova):.2f}, {max(ova):.2f} |")
            else:
                line += " – | – |"
        lines.append(line)
    lines += ["", f"Per solver over all its runs (target ≤ {OVERHEAD_TARGET:.2f}; 'steady' runs are those during "
                  f"which the bare evaluation time changed by at most 10%, i.e. the machine kept its speed; the "
                  f"verdict uses the steady runs when there are any):", "",
              "| solver | runs | median | max | steady runs | steady median | within target |"
              + (" counting autoencoder passes: median, within target |" if with_ae else ""),
              "|---" * (7 + with_ae) + "|"]
    for solver in dict.fromkeys(o["solver"] for o in overhead):
        mine = [o for o in overhead if o["solver"] == solver]
        ov = [o["overhead"] for o in mine]
        steady = [o for o in mine if abs(o["bare_drift"] - 1) <= 0.10]
        use = steady or mine
        med = statistics.median(o["overhead"] for o in use)
        line = (f"| {solver} | {len(ov)} | {statistics.median(ov):.2f} | {max(ov):.2f} | {len(steady)} | "
                + (f"{statistics.median(o['overhead'] for o in steady):.2f}" if steady else "–")
                + f" | {'yes' if med <= OVERHEAD_TARGET else '**no**'} |")
        if with_ae:
            if "overhead_with_autoencoder" in mine[0]:
                med_ae = statistics.median(o["overhead_with_autoencoder"] for o in use)
                line += f" {med_ae:.2f}, {'yes' if med_ae <= OVERHEAD_TARGET else '**no**'} |"
            else:
                line += " – |"
        lines.append(line)
    lines.append("")
    return lines


def throughput_table(rows: list[dict], batch_sizes: list[int]) -> list[str]:
    if not rows:
        return ["No throughput measured.", ""]
    head = "| solver | preset | steps | NFE | " + " | ".join(f"img/s at batch {b}" for b in batch_sizes) + " |"
    lines = [head, "|" + "---|" * (4 + len(batch_sizes))]
    for r in rows:
        cells = [f"{r['images_per_second'].get(str(b), math.nan):.3g}" for b in batch_sizes]
        lines.append(f"| {r['solver']} | {r['preset'] or '(defaults)'} | {r['steps']} {r['steps_param']} | "
                     f"{r['nfe']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def gpu_table(gpu: dict) -> list[str]:
    if gpu.get("skipped_reason"):
        return [f"Skipped: {gpu['skipped_reason']}.", ""]
    lines = [f"{gpu['device']}; architecture `{gpu['architecture']}` ({gpu['parameters'] / 1e6:.1f} M parameters, "
             f"random weights), {gpu['image_size']}×{gpu['image_size']}, task {gpu['task']} (`{gpu['spec']}`), "
             f"{gpu['images']}; extrapolated from runs of {' and '.join(map(str, gpu['short_steps']))} steps.", "",
             "| solver | preset | batch | steps | NFE | s/img | peak memory (MB) |", "|---|---|---|---|---|---|---|"]
    for r in gpu["rows"]:
        lines.append(f"| {r['solver']} | {r['preset']} | {r['batch']} | {r['full_steps']} {r['steps_param']} | "
                     f"{r['nfe']} | {r['seconds_per_image']:.3g} | {r['peak_memory_mb']:.0f} |")
    for s in gpu.get("skipped", []):
        lines.append(f"\n{s['solver']}: skipped ({s['reason']}).")
    lines.append("")
    return lines


def scale_table(scale: dict) -> list[str]:
    if not scale.get("rows") and not scale.get("skipped"):
        return ["Not run.", ""]
    k1, k2 = scale["short_steps"]
    lines = [f"{scale['device']}; architecture `{scale['architecture']}` (random weights; one input channel for "
             f"MRI/CT tasks), {scale['image_size']}×{scale['image_size']}, batch 1; runs of {k1} and {k2} steps give "
             f"seconds = setup + per-step × steps, extrapolated to the preset's steps; bare evaluation: median of "
             f"{scale['repeats']} before the first and {scale['repeats']} after the second run.", "",
             "| solver | task | preset | steps | NFE (backprop) | operator calls | bare eval s (fwd / fwd+bwd) | "
             "bare after/before | setup s + s per step | overhead (full preset) | overhead as run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in scale["rows"]:
        bare = f"{r['bare_fwd_s']:.2f}" + (f" / {r['bare_fwd_bwd_s']:.2f}" if r["bare_fwd_bwd_s"] else "")
        mark = "" if r["overhead"] <= OVERHEAD_TARGET else " ✗"
        calls = round(extrapolate(r["points"], "operator_evals", r["full_steps"]))
        lines.append(f"| {r['solver']} | {r['task']} | {r['preset']} | {r['full_steps']} {r['steps_param']} | "
                     f"{r['nfe']} ({r['nfe_backprop']}) | {calls} | {bare} | {r['bare_drift']:.2f} | "
                     f"{r['setup_s']:.2f} + {r['per_step_s']:.2f} | {r['overhead']:.3f}{mark} | "
                     f"{r['overhead_short']:.3f} ({r['points'][-1]['steps']} steps) |")
    for s in scale.get("skipped", []):
        lines.append(f"\n{s['solver']} on {s['task']}: skipped ({s['reason'].rstrip('.')}).")
    lines.append("")
    return lines


def results_markdown(result: dict) -> str:
    cfg, machine = result["config"], result["machine"]
    lines = [f"_Generated {result['date']} by `{result['command']}`._", "",
             "### What was run", "",
             f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch thread(s), "
             f"device {machine['device']}, torch {machine['torch']}, Python {machine['python']}"
             + (f", load average {machine['load_average']} at the start" if machine.get("load_average") is not None
                else "") + (f"; GPU {machine['cuda']}" if machine.get("cuda") else "") + "."]
    for p in result["priors"]:
        if p.get("available"):
            steps = f", {p['training_steps']} training steps" if p.get("training_steps") else ""
            lines.append(f"- Prior ({p['group']}): `{p['name']}`, sha256 `{(p['sha256'] or '?')[:16]}…`{steps}, "
                         f"{p['parameters'] / 1e6:.2f} M parameters; {len(p['images'])} images of `{p['data']}`: "
                         f"{', '.join(p['images'][:16])}{' …' if len(p['images']) > 16 else ''}.")
        else:
            lines.append(f"- Prior ({p['group']}) `{p['given']}`: not run (see Skipped).")
    chosen = ", ".join(f"{k} {v or 'paper (per task)'}" for k, v in cfg["presets"].items()
                       if k in cfg.get("solvers", cfg["presets"]))
    shown = {r["solver"] for r in result.get("rows", []) + result.get("overhead", [])}
    variants = [n for n in (cfg.get("variant_notes") or run_variants(cfg)) if n.split(" = ")[0] in shown]
    lines += [f"- Presets: {chosen}" + (f"; steps overridden to {cfg['steps_override']}" if cfg["steps_override"]
                                        else "") + ".",
              *([f"- Labelled variants: {'; '.join(variants)}."] if variants else []),
              f"- Noise σ = {cfg['noise']} on [0, 1] (σ = {2 * float(cfg['noise_sigma']):g} on [-1, 1]); seed "
              f"{cfg['seed']}; batch size {cfg['batch_size']}.", ""]
    if result.get("skipped"):
        lines += ["Skipped:", ""]
        for s in result["skipped"]:
            what = "everything" if s["task"] == "*" else f"{s['solver']} on {s['task']}"
            lines.append(f"- {s['group']} ({s['prior']}), {what}: {s['reason'].rstrip('.')}.")
        lines.append("")
    if "quality" in cfg["sections"]:
        lines += ["### Quality", "", "Mean ± standard deviation over the images; best per column in **bold**; "
                  "s/img and NFE are means per image.", ""]
        lines += result["quality_markdown"] or ["No quality results.", ""]
        lines += ["### Solver overhead", ""] + overhead_tables(result["overhead"])
    if "throughput" in cfg["sections"]:
        lines += ["### Batch throughput", "",
                  f"Task {cfg['throughput_task']}, the presets above with {cfg['throughput_steps']} steps "
                  f"(DAPS: annealing levels); one batch per size.", ""]
        lines += throughput_table(result["throughput"], cfg["batch_sizes"])
    if "gpu" in cfg["sections"]:
        lines += ["### GPU: paper presets on the FFHQ-256 architecture", ""] + gpu_table(result["gpu"])
    if "scale" in cfg["sections"]:
        lines += ["### Solver overhead at the papers' scale", ""] + scale_table(result.get("scale", {}))
    return "\n".join(lines).rstrip() + "\n"


def update_markdown(path: Path, text: str) -> None:
    """Replace the text between the BEGIN/END markers of ``path`` (append the section when they are absent)."""
    path = Path(path)
    block = f"{BEGIN}\n\n{text}\n{END}"
    if path.is_file():
        old = path.read_text()
        if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
            new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
        else:
            new = old.rstrip() + "\n\n## Results\n\n" + block + "\n"
    else:
        new = "# Solver benchmarks\n\n## Results\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(new)
    os.replace(tmp, path)


def _clean(obj):
    """JSON-safe: NaN/inf → None, paths → str, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def run_variants(cfg: dict) -> list[str]:
    """For a run whose rows carry a label suffix or parameters over the presets: what each such label ran."""
    suffix, params, presets = cfg.get("label_suffix") or "", cfg.get("params") or {}, cfg.get("presets") or {}
    notes = []
    for label in cfg.get("solvers", []):
        if suffix or params.get(label):
            extra = "".join(f", {k}={v}" for k, v in params.get(label, {}).items())
            notes.append(f"{label}{suffix} = {label}, preset {presets.get(label) or 'paper (per task)'}{extra}")
    return notes


def summary_lists(summary: dict) -> dict:
    """The quality summary with its (mean, std) tuples as lists (JSON)."""
    return {task: {s: {m: list(v) if isinstance(v, tuple) else v for m, v in d.items()} for s, d in per.items()}
            for task, per in summary.items()}
