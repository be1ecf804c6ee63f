"""``restore demo`` / ``make demo``: degrade the shipped samples and restore them with the embedded priors.

Face tasks (64×64) run DDNM, DPS, DAPS and RED-Diff (their fast presets) on the embedded ``faces64`` prior beside
the pseudo-inverse baseline, ReSample on the latent ``faces64-latent``; MRI (4× k-space) runs DDNM and DAPS on ``brain-mri``, sparse-view CT (60 views)
RED-Diff on ``ct``, each on a synthetic 128×128 slice that the prior itself generated (no shippable patient image
exists; see sample_data/README.md). A task whose prior is not available here runs the baseline only. Prints a table
of PSNR/SSIM (LPIPS when weights are available) and writes every measurement, restoration and sidecar under
``--out``.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from operators import Noise

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
        plan = [("pinv", None)] + (solvers if prior in available else [])
        for solver, preset in plan:
            job = Job(SAMPLES / name, Path(f"{stem}_{solver}.png"), m, reference=x, reference_path=str(SAMPLES / name))
            start = time.perf_counter()
            (row,) = run([job], solver, prior or "none", out, preset=preset, overwrite=True, device="cpu",
                         lpips_weights=lpips_weights)
            row["wall_seconds"] = time.perf_counter() - start
            rows.append(row)
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            table.add_row(name, spec.split(",")[0], f"{solver}" + (f" ({row['preset']})" if row.get("preset") else ""),
                          fmt(row.get("psnr"), ".2f"), fmt(row.get("ssim"), ".3f"), fmt(row.get("lpips"), ".3f"),
                          f"{row['wall_seconds']:.1f}", Path(row["output"]).name)
        if prior and prior not in available:
            console.print(f"[yellow]note:[/] prior '{prior}' is not available here; showing the pinv baseline only.")
    write_json(out / "demo.json", rows)
    console.print(table)
    console.print(f"outputs (images, measurements, JSON sidecars) in {out.resolve()}")
    return rows
