"""Quality against compute for one prior: its denoiser on whole test images at several checkpoints of a training
run, against BM3D on the same noisy images, and the compute a log-linear trend projects for reaching BM3D.

Each weight file is one point: the crops and pixels seen (its card's steps × batch, plus for a fine-tune those of
every prior it started from; crops of different sizes are compared by their pixels) and training seconds, and the mean PSNR of D(x + σn, σ) per σ (``prior_targets.denoiser_scores``: the
same noise and the same cached BM3D scores as the target table). The projection fits PSNR = a + b·log₂(pixels seen)
to the last ``--fit-last`` points per σ and solves for BM3D's PSNR: b is the gain per doubling of the training. A
denoiser saturates, so the projection is a lower bound on the compute, and it says nothing about a larger network.

Usage (the curve in docs/priors.md)::

    OMP_NUM_THREADS=1 python benchmarks/prior_curve.py --prior natural --data ../shared/data/test/cbsd68 --limit 8 \\
        --sigmas 0.05,0.1,0.2 --bm3d-cache ~/.cache/restore/targets/natural-denoise/bm3d_cache.json \\
        --json docs/priors/natural_curve.json priors/embedded/natural.safetensors \\
        ~/.cache/restore/train-out/natural-v2/natural-*.safetensors
    python benchmarks/prior_curve.py --json docs/priors/natural_curve.json --table
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parent))  # prior_targets
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import priors  # noqa: E402
from prior_targets import denoiser_scores  # noqa: E402
from restore.bench import spread  # noqa: E402
from restore.io import find_images  # noqa: E402


def compute_of(card) -> tuple[int, int, float]:
    """(images seen, pixels seen, training seconds) of a prior, counting every prior a fine-tune started from."""
    from priors.train import training_before

    total = training_before(card.extra or {})
    return total["init_images_seen"], total["init_pixels_seen"], total["init_train_seconds"]


def projection(points: list[dict], sigma: str, target: float, last: int) -> dict:
    """Least-squares PSNR = a + b·log₂(pixels seen) over the last ``last`` points; the pixels seen at which it
    reaches ``target`` (None when the trend does not rise)."""
    pts = sorted(points, key=lambda p: p["pixels_seen"])[-last:]
    x = np.log2([p["pixels_seen"] for p in pts])
    y = np.array([p["psnr"][sigma] for p in pts])
    b, a = np.polyfit(x, y, 1)
    newest = pts[-1]
    reach = None if b <= 0 else float(2 ** ((target - a) / b))
    return {"per_doubling": float(b), "pixels_needed": reach,
            "factor": None if reach is None else reach / newest["pixels_seen"], "points": len(pts)}


def table(res: dict) -> str:
    sigmas = res["sigmas"]
    lines = ["| weights | crops seen | pixels seen (10⁹) | CPU h | " + " | ".join(f"σ = {s}" for s in sigmas) + " |",
             "|---|---|---|---|" + "---|" * len(sigmas)]
    for p in sorted(res["points"], key=lambda p: p["pixels_seen"]):
        lines.append(f"| {p['label']} | {p['images_seen']:,} | {p['pixels_seen'] / 1e9:.2f} | {p['seconds'] / 3600:.2f} | "
                     + " | ".join(f"{p['psnr'][s]:.2f}" for s in sigmas) + " |")
    lines.append("| **BM3D** (same noise) | | | | " + " | ".join(f"{res['bm3d'][s]:.2f}" for s in sigmas) + " |")
    lines.append("")
    lines.append("| σ | gain per doubling of the pixels seen (dB) | pixels seen to reach BM3D (projected, 10⁹) | "
                 "× the newest |")
    lines.append("|---|---|---|---|")
    for s in sigmas:
        pr = res["projection"][s]
        need = "not rising" if pr["pixels_needed"] is None else f"{pr['pixels_needed'] / 1e9:,.1f}"
        fac = "–" if pr["factor"] is None else (f"{pr['factor']:.1f}" if pr["factor"] >= 1 else "reached")
        lines.append(f"| {s} | {pr['per_doubling']:+.2f} | {need} | {fac} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="*", help="weight files (with their .json cards) or prior names")
    ap.add_argument("--prior", default="", help="a label for the run")
    ap.add_argument("--data", default="")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--sigmas", default="0.05,0.1,0.2")
    ap.add_argument("--bm3d-cache", type=Path, default=Path.home() / ".cache" / "restore" / "targets" /
                    "natural-denoise" / "bm3d_cache.json")
    ap.add_argument("--fit-last", type=int, default=3)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.json.read_text())))
        return 0
    sigmas = [float(s) for s in args.sigmas.split(",")]
    files = spread(list(find_images([args.data])), args.limit)
    res = {"prior": args.prior, "data": args.data, "images": len(files), "sigmas": [str(s) for s in sigmas],
           "points": [], "bm3d": {}}
    for w in args.weights:
        prior = priors.resolve(w)
        images, pixels, seconds = compute_of(prior.card)
        point = {"label": Path(w).stem, "file": str(w), "sha256": prior.card.sha256, "images_seen": images,
                 "pixels_seen": pixels, "seconds": seconds, "psnr": {}}
        for s in sigmas:
            ours, theirs = denoiser_scores(prior, files, s, args.bm3d_cache)
            point["psnr"][str(s)] = statistics.fmean(ours)
            res["bm3d"][str(s)] = statistics.fmean(theirs)
        print(f"{point['label']}: {images:,} images, " + ", ".join(f"σ {s}: {v:.2f}" for s, v in point["psnr"].items()),
              flush=True)
        res["points"].append(point)
    res["projection"] = {str(s): projection(res["points"], str(s), res["bm3d"][str(s)], args.fit_last)
                         for s in sigmas} if len(res["points"]) >= 2 else {}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    if res["projection"]:
        print(table(res))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
