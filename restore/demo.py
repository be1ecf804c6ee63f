"""``restore demo`` / ``make demo``: degrade the shipped samples and restore them with the embedded priors.

Face tasks (64×64) run DDNM, DPS, DAPS, RED-Diff (their fast presets) and DPIR on the embedded ``faces64`` prior,
ReSample on the latent ``faces64-latent``; MRI (4× k-space) runs DDNM and DAPS on ``brain-mri``, sparse-view CT (60
views) RED-Diff and DPIR on ``ct``, each on a synthetic 128×128 slice that the prior itself generated (no shippable
patient image exists; see sample_data/README.md). Every task also runs the pseudo-inverse A⁺y and every classical
baseline that takes it (bicubic, Wiener, biharmonic, zero filling, FBP, TV: ``restore.bench.baselines_for``), so the
strongest simple method stands beside the solvers; a task whose prior is not available here runs those only. Prints a
table of PSNR/SSIM (LPIPS when weights are available), the best of each task in bold, and writes every measurement,
restoration and sidecar under ``--out``.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from operators import Noise

from .bench import baselines_for
from .degrade import degrade_one
from .io import load_image, preview, save_image, save_measurement, write_json
from .solve import Job, run

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"

# (sample image, operator spec, noise σ on [0, 1], prior, solvers and their presets)
TASKS = [
    ("astronaut_face64.png", "sr:factor=4,kernel=bicubic", 0.0, "faces64",
     [("ddnm", None), ("dps", "fast"), ("daps", "daps-100"), ("reddiff", "fast"), ("dpir", None)]),
    ("astronaut_face64.png", "mask:kind=box,size=24,margin=8", 0.0, "faces64", [("ddnm", None), ("daps", "daps-100")]),
    ("astronaut_face64.png", "mask:kind=random,fraction=0.7", 0.0, "faces64", [("ddnm", None)]),
    ("astronaut_face64.png", "blur:kind=gaussian,size=61,std=3.0", 0.01, "faces64", [("ddnm", "ddnm+"), ("dpir", None)]),
    ("astronaut_face64.png", "mask:kind=random,fraction=0.7", 0.0, "faces64-latent", [("resample", "fast")]),
    ("brain_synthetic128.png", "mri:accel=4,center=0.08,pattern=random", 0.0, "brain-mri",
     [("ddnm", None), ("daps", "daps-100")]),
    ("ct_synthetic128.png", "ct:views=60", 0.0, "ct", [("reddiff", "fast"), ("dpir", None)]),
]


def demo_plan(spec: str, image_shape, solvers: list, prior_available: bool) -> list[tuple[str, str | None]]:
    """What a task runs: A⁺y, then every classical baseline that takes the operator, then the diffusion solvers
    (when their prior is available)."""
    baselines = [b for b in baselines_for(spec, image_shape) if b != "pinv"]
    return [("pinv", None)] + [(b, None) for b in baselines] + (list(solvers) if prior_available else [])


def _cell(row: dict, key: str, fmt: str, best: dict) -> str:
    """A metric's table cell: "-" when absent, bold when it is the task's best."""
    v = row.get(key)
    if v is None:
        return "-"
    return f"[bold]{v:{fmt}}[/]" if v == best[key] else format(v, fmt)


def run_demo(out: Path, console: Console, seed: int = 0, lpips_weights: str | None = None) -> list[dict]:
    import priors

    out = Path(out)
    available = {r["name"] for r in priors.list_priors() if r["available"]}
    table = Table(title="restore demo")
    for col in ("image", "operator", "solver", "PSNR", "SSIM", "LPIPS", "seconds", "output"):
        table.add_column(col)
    rows = []
    for index, (name, spec, sigma, prior, solvers) in enumerate(TASKS):
        x = load_image(SAMPLES / name)
        m = degrade_one(x, spec, Noise.parse(sigma), seed, source=str(SAMPLES / name))
        stem = f"{index}_{Path(name).stem}_{spec.split(':')[0]}"
        save_measurement(out / f"{stem}.npz", m)
        save_image(out / f"{stem}_measurement.png", preview(m.y[0]))
        plan = demo_plan(spec, tuple(x.shape), solvers, prior in available)
        task_rows = []
        for solver, preset in plan:
            job = Job(SAMPLES / name, Path(f"{stem}_{solver}.png"), m, reference=x, reference_path=str(SAMPLES / name))
            start = time.perf_counter()
            (row,) = run([job], solver, prior or "none", out, preset=preset, overwrite=True, device="cpu",
                         lpips_weights=lpips_weights)
            row["wall_seconds"] = time.perf_counter() - start
            rows.append(row)
            task_rows.append((solver, row))
        best = {k: (max if k != "lpips" else min)((r[k] for _, r in task_rows if r.get(k) is not None), default=None)
                for k in ("psnr", "ssim", "lpips")}
        for k, (solver, row) in enumerate(task_rows):
            table.add_row(name, spec.split(",")[0], f"{solver}" + (f" ({row['preset']})" if row.get("preset") else ""),
                          _cell(row, "psnr", ".2f", best), _cell(row, "ssim", ".3f", best),
                          _cell(row, "lpips", ".3f", best),
                          f"{row['wall_seconds']:.1f}", Path(row["output"]).name, end_section=k == len(task_rows) - 1)
        if prior and prior not in available:
            console.print(f"[yellow]note:[/] prior '{prior}' is not available here; showing the classical baselines "
                          "only.")
    write_json(out / "demo.json", rows)
    console.print(table)
    console.print("Bold: the best of each task. One image is not a benchmark: `restore bench` compares solvers and "
                  "baselines on a test set with paired 95% intervals (docs/benchmarks.md, docs/priors.md).")
    console.print(f"outputs (images, measurements, JSON sidecars) in {out.resolve()}")
    return rows
