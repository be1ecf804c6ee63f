"""Denoiser speed of ADM UNets on this machine's CPU (random weights; the speed does not depend on them).

For each configuration: parameters, forward time at batch 1 (→ network evaluations per second, what a solver
needs), forward time at batch 8, and forward+backward time at batch 16 (→ training images per second, without the
optimiser step). Times are "best / median" over the repeats after one warm-up call; rates use the best. Usage::

    .venv/bin/python benchmarks/priors_speed.py                 # FFHQ-256 + the two small 64×64 candidates
    .venv/bin/python benchmarks/priors_speed.py --configs cpu64 --repeats 10 --threads 2 --channels-last
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from priors.adm import ADMUNet  # noqa: E402
from priors.configs import ADM_CONFIGS  # noqa: E402

BIG = {"ffhq_10m", "256x256_diffusion_uncond"}


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best, median) seconds over ``repeats`` calls after a warm-up call (allocator, oneDNN kernel selection).
    The best is the machine's speed when it has its cores; the median shows what sharing them costs."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def best_median(v: tuple[float, float]) -> str:
    return f"{v[0]:.3f} / {v[1]:.3f}"


def bench(name: str, repeats: int, size: int | None, channels_last: bool) -> dict:
    cfg = ADM_CONFIGS[name]
    torch.manual_seed(0)
    model = ADMUNet(cfg).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    hw = size or cfg.image_size
    row = {"config": name + (" (NHWC)" if channels_last else ""), "size": hw, "params_M": model.num_parameters() / 1e6}

    def fwd(b: int):
        x = torch.randn(b, cfg.in_channels, hw, hw).contiguous(memory_format=fmt)
        t = torch.full((b,), 500.0)

        def run():
            with torch.no_grad():
                model(x, t)

        return run

    big = name in BIG
    row["fwd_b1"] = timed(fwd(1), max(1, repeats // 3) if big else repeats)
    if big:  # batch 8 / training of a 93M-550M network at 256² is not a CPU workload: batch 1 only
        row["fwd_b8"] = row["train_b16"] = (float("nan"), float("nan"))
        return row
    row["fwd_b8"] = timed(fwd(8), max(1, repeats // 2))

    model.train()
    x = torch.randn(16, cfg.in_channels, hw, hw).contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (16,)).float()

    def train_step():
        model.zero_grad(set_to_none=True)
        model(x, t).square().mean().backward()

    row["train_b16"] = timed(train_step, max(1, repeats // 2))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["ffhq_10m", "cpu64", "small64", "small128"],
                    choices=sorted(ADM_CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=6, help="timed calls per measurement (a third for 256² models)")
    ap.add_argument("--size", type=int, default=None, help="image size (default: the config's image_size)")
    ap.add_argument("--channels-last", action="store_true", help="also time each config in channels_last (NHWC)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {load:.1f}")
    head = ("config", "size", "params (M)", "fwd b1 (s)", "NFE/s b1", "fwd b8 (s)", "img/s b8",
            "fwd+bwd b16 (s)", "train img/s")

    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    runs = [(n, False) for n in args.configs]
    if args.channels_last:
        runs = [(n, cl) for n in args.configs for cl in (False, True)]
    for name, cl in runs:
        r = bench(name, args.repeats, args.size, cl)
        cells = (r["config"], f"{r['size']}²", f"{r['params_M']:.2f}",
                 best_median(r["fwd_b1"]), f"{1 / r['fwd_b1'][0]:.2f}",
                 best_median(r["fwd_b8"]), f"{8 / r['fwd_b8'][0]:.1f}",
                 best_median(r["train_b16"]), f"{16 / r['train_b16'][0]:.1f}")
        print("| " + " | ".join("–" if "nan" in c else c for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
