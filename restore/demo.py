"""``restore demo`` / ``make demo``: degrade the shipped samples with several operators and restore them.

Until the diffusion solvers land, the restoration shown is the pseudo-inverse baseline A⁺y (bicubic-like
upsampling, zero-filled MRI, filtered back-projection for CT), with PSNR/SSIM against the clean image.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from .degrade import degrade_one
from .io import load_image, preview, save_image, save_measurement, write_json
from .metrics import psnr, ssim
from operators import Noise

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"

# (sample image, operator spec, noise σ on [0, 1])
TASKS = [
    ("astronaut_face64.png", "sr:factor=4,kernel=bicubic", 0.0),
    ("astronaut_face64.png", "mask:kind=box,size=24,margin=8", 0.0),
    ("astronaut_face64.png", "mask:kind=random,fraction=0.7", 0.0),
    ("astronaut_face64.png", "blur:kind=gaussian,size=61,std=3.0", 0.0),
    ("astronaut.png", "blur:kind=motion,size=61,intensity=0.5", 0.0),
    ("shepp_logan128.png", "mri:accel=4,center=0.08,pattern=random", 0.0),
    ("shepp_logan128.png", "ct:views=60", 0.0),
]


def run_demo(out: Path, console: Console, seed: int = 0) -> list[dict]:
    out = Path(out)
    table = Table(title="restore demo: measurement → pseudo-inverse A⁺y (baseline; solvers come next)")
    for col in ("image", "operator", "PSNR dB", "SSIM", "seconds", "output"):
        table.add_column(col)
    rows = []
    for name, spec, sigma in TASKS:
        x = load_image(SAMPLES / name)
        m = degrade_one(x, spec, Noise.parse(sigma), seed, source=name)
        op = m.operator()
        start = time.perf_counter()
        with torch.no_grad():
            estimate = op.A_pinv(m.y)[0].real.clamp(0, 1)
        seconds = time.perf_counter() - start
        stem = f"{Path(name).stem}__{op.spec.family}_{len(rows)}"
        save_measurement(out / f"{stem}.npz", m)
        save_image(out / f"{stem}_measurement.png", preview(m.y[0]))
        path = save_image(out / f"{stem}_pinv.png", estimate)
        row = dict(image=name, operator=str(op.spec), psnr=psnr(estimate, x), ssim=ssim(estimate, x),
                   seconds=seconds, output=str(path))
        rows.append(row)
        table.add_row(name, str(op.spec).split(",")[0] + ",…", f"{row['psnr']:.2f}", f"{row['ssim']:.3f}",
                      f"{seconds:.3f}", str(path))
    write_json(out / "demo.json", rows)
    console.print(table)
    console.print(f"outputs in {out.resolve()}")
    return rows
