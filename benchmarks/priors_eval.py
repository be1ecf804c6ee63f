"""Evidence that a prior is real: (1) as a denoiser, (2) as a generator.

1. PSNR of D(x + σn, σ) on a test folder at σ ∈ {0.05, 0.1, 0.2, 0.4} on the [0, 1] scale (the prior sees the
   [-1, 1] image x·2−1 with noise 2σ), beside two classical references on the same noisy images: the best Gaussian
   smoothing (the blur width that maximises the mean PSNR at that σ, chosen on the same images: an oracle, so a
   generous baseline) and BM3D (PyPI `bm3d`, with the true σ).
2. A grid of unconditional samples: DDPM ancestral sampling with the prior's schedule, respaced to ``--steps``.

Usage::

    python benchmarks/priors_eval.py --prior faces64 --data ../shared/data/test/faces64 --limit 64 \\
        --samples docs/priors/faces64_samples.png --json docs/priors/faces64_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import priors  # noqa: E402
from restore.io import find_images, load_image, save_image  # noqa: E402
from restore.metrics import psnr  # noqa: E402

SIGMAS = (0.05, 0.1, 0.2, 0.4)
BLURS = (0.3, 0.5, 0.7, 0.9, 1.2, 1.5, 2.0, 2.5, 3.0)


def gaussian_blur(x: torch.Tensor, s: float) -> torch.Tensor:
    r = int(np.ceil(3 * s))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / s) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def bm3d_denoise(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    import bm3d

    arr = noisy.permute(1, 2, 0).double().numpy()
    out = bm3d.bm3d_rgb(arr, sigma) if arr.shape[-1] == 3 else bm3d.bm3d(arr[..., 0], sigma)[..., None]
    return torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(arr.shape).permute(2, 0, 1)


@torch.no_grad()
def evaluate_denoiser(prior, images: list[torch.Tensor], sigmas=SIGMAS, use_bm3d=True, batch=16) -> dict:
    results = {}
    for sigma in sigmas:
        g = torch.Generator().manual_seed(int(sigma * 1e4))
        clean = torch.stack(images)
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        den = torch.cat([((prior.denoise(noisy[i:i + batch] * 2 - 1, 2 * sigma) + 1) / 2)
                         for i in range(0, len(images), batch)])
        row = {"prior": float(np.mean([psnr(d, c) for d, c in zip(den, clean)])),
               "noisy": float(np.mean([psnr(n, c) for n, c in zip(noisy, clean)]))}
        blur_scores = {s: float(np.mean([psnr(b, c) for b, c in zip(gaussian_blur(noisy, s), clean)])) for s in BLURS}
        best = max(blur_scores, key=blur_scores.get)
        row["gaussian_smoothing"], row["gaussian_smoothing_width"] = blur_scores[best], best
        if use_bm3d:
            row["bm3d"] = float(np.mean([psnr(bm3d_denoise(n, sigma), c) for n, c in zip(noisy, clean)]))
        results[str(sigma)] = row
        print(f"σ={sigma}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in row.items()), flush=True)
    return results


@torch.no_grad()
def sample_grid(prior, n: int, size: int, steps: int, seed: int = 0) -> torch.Tensor:
    """DDPM ancestral sampling (posterior variance β̃) on a respaced schedule of ``steps`` steps."""
    T = prior.T
    ts = torch.linspace(T - 1, 0, steps).round().long().unique_consecutive()
    ab = prior.alphas_cumprod64
    g = torch.Generator().manual_seed(seed)
    c = prior.card.channels
    x = torch.randn(n, c, size, size, generator=g)
    for i, t in enumerate(ts):
        a_t = ab[t]
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        eps, _ = prior.model_output(x, torch.full((n,), float(t)))
        x0 = ((x - (1 - a_t).sqrt().float() * eps) / a_t.sqrt().float()).clamp(-1, 1)
        if i + 1 == len(ts):
            x = x0
            break
        beta = 1 - a_t / a_prev
        var = beta * (1 - a_prev) / (1 - a_t)
        mean = (a_prev.sqrt() * beta / (1 - a_t)).float() * x0 + ((1 - a_prev) * (1 - beta).sqrt() / (1 - a_t)).float() * x
        x = mean + var.sqrt().float() * torch.randn(x.shape, generator=g)
    return (x + 1) / 2


def tile(images: torch.Tensor, cols: int) -> torch.Tensor:
    n, c, h, w = images.shape
    rows = (n + cols - 1) // cols
    grid = torch.ones(c, rows * h, cols * w)
    for k in range(n):
        r, q = divmod(k, cols)
        grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = images[k]
    return grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", required=True)
    ap.add_argument("--data", required=True, help="test images")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--samples", default="", help="write a PNG grid of unconditional samples here")
    ap.add_argument("--n-samples", type=int, default=36)
    ap.add_argument("--steps", type=int, default=250, help="sampling steps for the grid")
    ap.add_argument("--json", default="")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prior = priors.resolve(args.prior).eval()
    files = [p for p, _ in find_images([args.data])][: args.limit]
    images = [load_image(p) for p in files]
    if prior.card.channels == 1:
        images = [im.mean(0, keepdim=True) if im.shape[0] == 3 else im for im in images]
    t0 = time.perf_counter()
    report = {"prior": prior.card.name, "data": str(args.data), "images": len(images),
              "denoiser_psnr_db": evaluate_denoiser(prior, images, use_bm3d=not args.no_bm3d)}
    report["denoise_seconds"] = round(time.perf_counter() - t0, 1)
    size = images[0].shape[-1]
    x = torch.randn(1, prior.card.channels, size, size)
    prior.denoise(x, 0.5)
    t0 = time.perf_counter()
    for _ in range(5):
        prior.denoise(x, 0.5)
    report["seconds_per_evaluation_b1"] = round((time.perf_counter() - t0) / 5, 4)
    if args.samples:
        grid = tile(sample_grid(prior, args.n_samples, size, args.steps), cols=int(np.ceil(args.n_samples ** 0.5)))
        save_image(args.samples, grid)
        report["samples"] = args.samples
        report["sample_steps"] = args.steps
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
