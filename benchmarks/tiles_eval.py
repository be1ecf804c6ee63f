"""Does tiled evaluation change what an any-size prior computes? Denoiser PSNR on whole photographs, evaluated whole
and in overlapping tiles (``priors.base.tiled``, as ``restore solve --tile N`` does), at several noise levels.

For each σ (on the [0, 1] scale; the prior sees 2σ on [-1, 1]) the same noise (one generator per σ) is added to
every image; D(y, σ) is clamped to [0, 1] and scored against the clean image; the mean PSNR over the images and the
seconds spent are printed per (σ, tile, overlap) and written to ``--json``.

Usage (figures in docs/benchmarks.md)::

    python benchmarks/tiles_eval.py --prior natural --data ../shared/data/test/cbsd68 --every 2 \\
        --sigmas 0.05,0.1,0.2,0.4 --tiles none,128/16,96/16 --threads 1 --json tiles.json
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
import priors  # noqa: E402
from restore.io import find_images, load_image  # noqa: E402
from restore.metrics import psnr  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default="natural")
    ap.add_argument("--data", required=True)
    ap.add_argument("--every", type=int, default=1, help="use every N-th image of the sorted folder")
    ap.add_argument("--sigmas", default="0.05,0.1,0.2,0.4")
    ap.add_argument("--tiles", default="none,128/16,96/16", help="comma-separated TILE/OVERLAP, or none (whole)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior = priors.resolve(args.prior)
    files = [f for f, _ in find_images([args.data])][::args.every]
    images = [load_image(f) for f in files]
    configs = [(None, 0) if t == "none" else tuple(int(v) for v in t.split("/")) for t in args.tiles.split(",")]
    rows = []
    for sigma in (float(s) for s in args.sigmas.split(",")):
        g = torch.Generator().manual_seed(int(sigma * 1e4))
        noisy = [x + sigma * torch.randn(x.shape, generator=g) for x in images]
        for tile, overlap in configs:
            prior.tile, prior.tile_overlap = tile, overlap
            start = time.perf_counter()
            with torch.no_grad():
                scores = [psnr(((prior.denoise(n[None] * 2 - 1, 2 * sigma) + 1) / 2).clamp(0, 1)[0], x)
                          for n, x in zip(noisy, images)]
            row = dict(sigma=sigma, tile=tile, overlap=overlap if tile else None, psnr=float(np.mean(scores)),
                       seconds=round(time.perf_counter() - start, 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(prior=args.prior, data=args.data, images=len(images), rows=rows),
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
