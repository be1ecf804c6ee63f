"""Our SVD/HQS solvers beside deepinv's (DDRM, DiffPIR) on the same prior, measurements and test faces.

Every image is measured once (operator draws and noise from ``restore.degrade.image_seed``, as ``restore bench``
does); each method restores the same y. deepinv gets our prior as its denoiser D(x, σ) on [0, 1] (σ on [0, 1] is
σ̄/2 of the [-1, 1] model; the ε-network at the nearest timestep) and our operator as a ``DecomposablePhysics`` built
from its SVD, so the only differences are the algorithms. Prints mean PSNR / LPIPS per method and task, the paired
difference to DDNM, and writes a JSON of the per-image values.

``deepinv-ddrm`` is deepinv's DDRM as it ships (100 levels σ = 1 … 0 on [0, 1], every noise drawn as z/√2);
``deepinv-ddrm-paper`` the same with the paper's noise (z), which isolates what the /√2 (a lower sampling
temperature) does; ``ddrm:low-start`` is ours from σ = 1 on [0, 1] with 100 steps evenly spaced in t.

Usage::

    .venv/bin/python benchmarks/deepinv_parity.py --limit 8 --json /tmp/parity.json

(deepinv is the ``parity`` extra: ``pip install 'restore[parity]'``.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import operators  # noqa: E402
import priors  # noqa: E402
from operators.seeding import generators  # noqa: E402
from restore.bench import spread  # noqa: E402
from restore.degrade import image_seed  # noqa: E402
from restore.io import find_images, load_image  # noqa: E402
from restore.lpips_metric import lpips_or_reason  # noqa: E402
from restore.metrics import psnr  # noqa: E402
from restore.solvers import get_solver, solve  # noqa: E402

TASKS = {"sr4": "sr:factor=4", "inpaint-random": "mask:kind=random,fraction=0.7"}
OURS = ["ddnm", "ddrm", "ddrm:100", "ddrm:low-start", "diffpir"]
THEIRS = ["deepinv-ddrm", "deepinv-ddrm-paper", "deepinv-diffpir"]


class Denoiser(torch.nn.Module):
    """deepinv's D(x, σ) on [0, 1] from a prior's ε-network (the nearest discrete timestep to σ̄ = 2σ)."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior
        ac = prior.alphas_cumprod.double()
        self.ac, self.reduced = ac, ((1 - ac) / ac).sqrt()

    def forward(self, x01, sigma01):
        t = int((self.reduced - 2 * float(sigma01)).abs().argmin())
        a = float(self.ac[t])
        x_t = a**0.5 * (2 * x01 - 1)
        eps, _ = self.prior.model_output(x_t, torch.full((x01.shape[0],), float(t)))
        return ((x_t - (1 - a) ** 0.5 * eps) / a**0.5 + 1) / 2


def deepinv_method(name: str, prior, op, sigma: float, seed: int):
    import deepinv as dinv

    physics = dinv.physics.DecomposablePhysics(U=op.U, U_adjoint=op.Ut, V=op.V, V_adjoint=op.Vt,
                                               mask=op.singulars(),
                                               noise_model=dinv.physics.GaussianNoise(sigma=sigma))
    den = Denoiser(prior)
    torch.manual_seed(seed)
    if name.startswith("deepinv-ddrm"):
        return dinv.sampling.DDRM(den, sigmas=np.linspace(1, 0, 100)), physics
    return dinv.sampling.DiffPIR(den, dinv.optim.data_fidelity.L2(), sigma=sigma, max_iter=100), physics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prior", default="faces64")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/test/faces64"))
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--noise", type=float, default=0.025)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--methods", default=",".join(OURS + THEIRS))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    prior = priors.resolve(args.prior)
    files = [str(path) for path, _ in spread(find_images([args.data]), args.limit)]
    methods = args.methods.split(",")
    rows = []
    for task in args.tasks.split(","):
        spec = TASKS[task]
        for f in files:
            x = load_image(f)
            seed = image_seed(0, Path(f).name)
            op = operators.build(spec, tuple(x.shape), seeds=[seed])
            y = operators.measure(op, x[None], operators.Noise.parse(str(args.noise)), [seed])
            for m in methods:
                t0 = time.perf_counter()
                if m.startswith("deepinv"):
                    method, physics = deepinv_method(m, prior, op, args.noise, seed)
                    if m.endswith("-paper"):  # its z/√2 draws made z: the paper's noise std ησ (see the docstring)
                        original = torch.randn_like
                        torch.randn_like = lambda x, *a, **k: original(x, *a, **k) * 2**0.5
                        try:
                            est = method(y, physics).clamp(0, 1)
                        finally:
                            torch.randn_like = original
                    else:
                        est = method(y, physics).clamp(0, 1)
                else:
                    name, _, preset = m.partition(":")
                    solver = get_solver(name, preset=preset or None)
                    est = solve(solver, y, op, prior, seeds=[seed], noise=args.noise).x
                lp, _ = lpips_or_reason(est, x[None], download=False)
                rows.append(dict(task=task, image=Path(f).name, method=m, psnr=psnr(est[0], x),
                                 lpips=float(np.mean(lp)) if lp is not None else None,
                                 seconds=time.perf_counter() - t0))
                print(f"{task:15s} {Path(f).name:10s} {m:16s} {rows[-1]['psnr']:6.2f} dB", flush=True)
    print("\nmean over images (paired difference to ddnm, PSNR dB):")
    for task in args.tasks.split(","):
        base = {r["image"]: r["psnr"] for r in rows if r["task"] == task and r["method"] == "ddnm"}
        for m in methods:
            sel = [r for r in rows if r["task"] == task and r["method"] == m]
            p = np.mean([r["psnr"] for r in sel])
            lps = [r["lpips"] for r in sel if r["lpips"] is not None]
            d = np.mean([r["psnr"] - base[r["image"]] for r in sel]) if base else float("nan")
            print(f"{task:15s} {m:16s} PSNR {p:6.2f}  Δ {d:+5.2f}  LPIPS {np.mean(lps) if lps else float('nan'):.3f}"
                  f"  {np.mean([r['seconds'] for r in sel]):.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
