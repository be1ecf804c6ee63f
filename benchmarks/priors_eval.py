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
    """Images of one size go through the network in batches of ``batch``; mixed sizes (whole photographs for a
    convolutional prior) one by one."""
    results = {}
    same = len({tuple(im.shape) for im in images}) == 1
    step = batch if same else 1
    for sigma in sigmas:
        g = torch.Generator().manual_seed(int(sigma * 1e4))
        clean = [im[None] for im in images]
        noisy = [c + sigma * torch.randn(c.shape, generator=g) for c in clean]
        if same:
            clean, noisy = [torch.cat(clean)], [torch.cat(noisy)]
        den = [torch.cat([((prior.denoise(n[i:i + step] * 2 - 1, 2 * sigma) + 1) / 2) for i in range(0, len(n), step)])
               for n in noisy]
        clean, noisy, den = ([im for group in xs for im in group] for xs in (clean, noisy, den))
        row = {"prior": float(np.mean([psnr(d, c) for d, c in zip(den, clean)])),
               "noisy": float(np.mean([psnr(n, c) for n, c in zip(noisy, clean)]))}
        blur_scores = {s: float(np.mean([psnr(gaussian_blur(n[None], s)[0], c) for n, c in zip(noisy, clean)]))
                       for s in BLURS}
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
    """DDPM ancestral sampling (posterior variance β̃) on a respaced schedule of ``steps`` steps (a latent prior
    samples latents and decodes them)."""
    T = prior.T
    ts = torch.linspace(T - 1, 0, steps).round().long().unique_consecutive()
    ab = prior.alphas_cumprod64
    g = torch.Generator().manual_seed(seed)
    latent = bool(prior.card.latent)
    shape = prior.latent_shape((size, size)) if latent else (prior.card.channels, size, size)
    x = torch.randn(n, *shape, generator=g)
    for i, t in enumerate(ts):
        a_t = ab[t]
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        eps, _ = prior.model_output(x, torch.full((n,), float(t)))
        x0 = (x - (1 - a_t).sqrt().float() * eps) / a_t.sqrt().float()
        x0 = x0 if latent else x0.clamp(-1, 1)
        if i + 1 == len(ts):
            x = x0
            break
        beta = 1 - a_t / a_prev
        var = beta * (1 - a_prev) / (1 - a_t)
        mean = (a_prev.sqrt() * beta / (1 - a_t)).float() * x0 + ((1 - a_prev) * (1 - beta).sqrt() / (1 - a_t)).float() * x
        x = mean + var.sqrt().float() * torch.randn(x.shape, generator=g)
    if latent:
        x = torch.cat([prior.decode(x[i:i + 16]) for i in range(0, n, 16)])
    return ((x + 1) / 2).clamp(0, 1)


def colour_stats(images: torch.Tensor) -> dict:
    """How a set of RGB images (N, 3, H, W) on [0, 1] varies in overall colour: the correlations between their
    three channel means (R–G, R–B, G–B; faces vary mostly in brightness, so these are high) and the standard deviation
    of each channel mean. A prior whose samples have casts draws the channels' levels on their own: low correlations,
    a wide spread."""
    m = images.double().mean(dim=(2, 3)).numpy()  # (N, 3)
    c = np.corrcoef(m, rowvar=False)
    return {"corr_rg_rb_gb": [round(float(c[0, 1]), 3), round(float(c[0, 2]), 3), round(float(c[1, 2]), 3)],
            "std_rgb": [round(float(s), 4) for s in m.std(axis=0, ddof=1)], "n": int(m.shape[0])}


@torch.no_grad()
def evaluate_latent_denoiser(prior, images: list[torch.Tensor], sigmas=(0.1, 0.3, 1.0, 3.0), batch: int = 32) -> dict:
    """A latent prior as a denoiser of its own latents z = E(x) of the test images: mean squared error of
    D(z + σn, σ) against z, beside the noisy latents and the best linear (Wiener) shrinkage with the latents' own
    mean and variance (an oracle: a generous baseline)."""
    x = torch.stack(images) * 2 - 1
    z = torch.cat([prior.encode(x[i:i + batch]) for i in range(0, len(x), batch)])
    mean, var = float(z.mean()), float(z.var())
    out = {}
    for sigma in sigmas:
        g = torch.Generator().manual_seed(int(sigma * 1e4))
        zn = z + sigma * torch.randn(z.shape, generator=g)
        d = torch.cat([prior.denoise(zn[i:i + batch], sigma) for i in range(0, len(z), batch)])
        w = var / (var + sigma**2)
        row = {"noisy_mse": float(((zn - z) ** 2).mean()), "wiener_mse": float(((w * zn + (1 - w) * mean - z) ** 2)
                                                                                   .mean()),
               "prior_mse": float(((d - z) ** 2).mean())}
        out[str(sigma)] = row
        print(f"latent σ={sigma}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    return out


def prepare(images: list[torch.Tensor], channels: int, resize: int, multiple: int) -> list[torch.Tensor]:
    """Grey for a grey prior; optional antialiased bicubic resize to ``resize``²; centre crop to a multiple of
    ``multiple`` (what a convolutional prior's downsampling needs)."""
    out = []
    for im in images:
        if channels == 1 and im.shape[0] == 3:
            im = im.mean(0, keepdim=True)
        if channels == 3 and im.shape[0] == 1:
            im = im.expand(3, -1, -1)
        if resize:
            im = F.interpolate(im[None], size=(resize, resize), mode="bicubic", antialias=True,
                               align_corners=False)[0].clamp(0, 1)
        h, w = (d - d % multiple for d in im.shape[-2:])
        top, left = (im.shape[-2] - h) // 2, (im.shape[-1] - w) // 2
        out.append(im[:, top:top + h, left:left + w].contiguous())
    return out


@torch.no_grad()
def autoencoder_psnr(prior, images: list[torch.Tensor], batch: int = 32) -> float:
    """Mean PSNR of decode(encode(x)) on ``images`` (a latent prior's autoencoder)."""
    x = torch.stack(images) * 2 - 1
    rec = torch.cat([prior.decode(prior.encode(x[i:i + batch])) for i in range(0, len(x), batch)])
    return float(np.mean([psnr(((r + 1) / 2).clamp(0, 1), (c + 1) / 2) for r, c in zip(rec, x)]))


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
    ap.add_argument("--resize", type=int, default=0, help="resize test images to N×N first (CT: 512² DICOM → 128²)")
    ap.add_argument("--sample-size", type=int, default=0, help="size of the samples (default: the card's size)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prior = priors.resolve(args.prior).eval()
    files = [p for p, _ in find_images([args.data])][: args.limit]
    card = prior.card
    multiple = 8 if card.extra.get("any_size") else 1
    images = prepare([load_image(p) for p in files], card.channels, args.resize, multiple)
    report = {"prior": card.name, "data": str(args.data), "images": len(images),
              "image_sizes": sorted({f"{im.shape[-2]}x{im.shape[-1]}" for im in images}),
              "threads": torch.get_num_threads()}
    if args.resize:
        report["resized_to"] = args.resize
    t0 = time.perf_counter()
    if card.latent:
        report["autoencoder_psnr_db"] = round(autoencoder_psnr(prior, images), 2)
        print(f"autoencoder reconstruction PSNR {report['autoencoder_psnr_db']} dB", flush=True)
        report["latent_denoiser_mse"] = evaluate_latent_denoiser(prior, images)
    else:
        report["denoiser_psnr_db"] = evaluate_denoiser(prior, images, use_bm3d=not args.no_bm3d)
    report["denoise_seconds"] = round(time.perf_counter() - t0, 1)
    size = args.sample_size or card.image_size or images[0].shape[-1]
    x = torch.randn(1, *(prior.latent_shape((size, size)) if card.latent else (card.channels, size, size)))
    prior.denoise(x, 0.5)
    t0 = time.perf_counter()
    for _ in range(5):
        prior.denoise(x, 0.5)
    report["seconds_per_evaluation_b1"] = round((time.perf_counter() - t0) / 5, 4)
    report["evaluation_size"] = size
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
