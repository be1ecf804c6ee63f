"""Operator speed benchmark (a script, not a test).

    python benchmarks/operators.py [--size 256] [--repeats 5] [--threads N] [--device cpu] [--only TEXT]
                                      [--no-skimage] [--json PATH]

For every preset in ``operators.PRESETS``: build it for one size×size image (3 channels; 1 for MRI and CT) and time
the forward A and, for linear operators, the adjoint Aᵀ (median and minimum of ``--repeats`` runs after one warm-up
run, which also builds cached geometry). Presets whose family does not build (yet) are skipped and listed.

CT against scikit-image on the same size×size Shepp–Logan phantom, timed in the same loop (interleaved, so that a
busy machine slows both alike): our Radon (180 views) vs ``skimage.transform.radon`` and our FBP vs
``skimage.transform.iradon`` (ramp filter) on skimage's sinogram; ratio = skimage time / our time (> 1: ours faster).
skimage runs on one core, so the comparison is repeated with one torch thread.

On a machine shared with other busy processes, OpenMP threads that spin at barriers lose their time slices and
multi-threaded timings degrade badly; ``OMP_WAIT_POLICY=PASSIVE`` (set before starting Python) avoids that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import operators  # noqa: E402
from operators import parse  # noqa: E402

ONE_CHANNEL = ("mri", "ct")


def timer(fn, device: str):
    def run():
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return run


def stats(times: list[float]) -> dict:
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": len(times)}


def bench_presets(size: int, repeats: int, device: str, only: str = "") -> tuple[list[dict], list[dict]]:
    rows, skipped = [], []
    for name, (spec_text, _) in operators.PRESETS.items():
        if only not in name:
            continue
        try:
            spec = parse(spec_text)
            channels = 1 if spec.family in ONE_CHANNEL else 3
            op = operators.build(spec, (channels, size, size), seeds=[0], device=device)
            g = torch.Generator().manual_seed(0)
            x = torch.rand((1, channels, size, size), generator=g)
            if op.image_dtype.is_complex:
                x = torch.complex(x, torch.rand(x.shape, generator=g))
            x = x.to(device)
            with torch.no_grad():
                y = op.A(x)
                if op.linear:
                    op.A_adjoint(y)
        except Exception as exc:  # noqa: BLE001 - a family being written by someone else must not stop the run
            skipped.append({"preset": name, "spec": spec_text, "reason": f"{type(exc).__name__}: {exc}"[:160]})
            continue
        jobs = {"forward": timer(lambda: op.A(x), device)}
        if op.linear:
            jobs["adjoint"] = timer(lambda: op.A_adjoint(y), device)
        times = {k: [] for k in jobs}
        with torch.no_grad():
            for _ in range(repeats):
                for k, job in jobs.items():
                    times[k].append(job())
        rows.append({"preset": name, "spec": str(op.spec), "image": [channels, size, size],
                     "measurement": list(y.shape[1:]), "linear": op.linear,
                     **{k: stats(v) for k, v in times.items()}})
    return rows, skipped


def bench_ct_vs_skimage(size: int, repeats: int, device: str) -> dict:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import iradon, radon, resize

    img = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True)
    theta = np.linspace(0, 180, 180, endpoint=False)
    op = operators.build("ct-full", (1, size, size), device=device)
    x = torch.from_numpy(img).float()[None, None].to(device)
    sino = radon(img, theta)
    y = torch.from_numpy(sino.T.copy()).float()[None, None].to(device)
    with torch.no_grad():  # warm-up (builds the cached sampling grids) and agreement check
        ours_y, ours_x = op.A(x), op.fbp(y)
    ref_x = iradon(sino, theta, filter_name="ramp")
    agreement = {
        "radon_rel_l2": float(np.linalg.norm(ours_y[0, 0].cpu().numpy().T - sino) / np.linalg.norm(sino)),
        "fbp_rel_l2": float(np.linalg.norm(ours_x[0, 0].cpu().numpy() - ref_x) / np.linalg.norm(ref_x)),
    }
    jobs = {"ours_radon": timer(lambda: op.A(x), device), "skimage_radon": timer(lambda: radon(img, theta), "cpu"),
            "ours_fbp": timer(lambda: op.fbp(y), device),
            "skimage_iradon": timer(lambda: iradon(sino, theta, filter_name="ramp"), "cpu"),
            "ours_adjoint": timer(lambda: op.A_adjoint(y), device)}
    times = {k: [] for k in jobs}
    with torch.no_grad():
        for _ in range(repeats):
            for k, job in jobs.items():
                times[k].append(job())
    out = {k: stats(v) for k, v in times.items()}
    for what, sk in (("radon", "skimage_radon"), ("fbp", "skimage_iradon")):
        out[f"{what}_speedup_median"] = out[sk]["median_ms"] / out[f"ours_{what}"]["median_ms"]
        out[f"{what}_speedup_min"] = out[sk]["min_ms"] / out[f"ours_{what}"]["min_ms"]
    out.update(agreement)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image height = width (default 256)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per operation (default 5)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--only", default="", help="only the presets whose name contains this text")
    ap.add_argument("--no-skimage", action="store_true", help="skip the CT comparison with scikit-image")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "device": args.device, "machine": platform.processor() or platform.machine(),
           "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
           "size": args.size, "repeats": args.repeats}
    print(f"torch {env['torch']} on {args.device}, {env['threads']} torch threads, {env['cpu_count']} CPUs, "
          f"load average {env['load_average_1min']}; {args.size}×{args.size} images, median (min) of "
          f"{args.repeats} runs in ms")

    rows, skipped = bench_presets(args.size, args.repeats, args.device, args.only)
    head = f"{'preset':<22} {'image':>11} {'measurement':>16} {'forward':>17} {'adjoint':>17}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        cell = lambda k: f"{r[k]['median_ms']:8.1f} ({r[k]['min_ms']:6.1f})" if k in r else f"{'—':>17}"  # noqa: E731
        print(f"{r['preset']:<22} {'×'.join(map(str, r['image'])):>11} {'×'.join(map(str, r['measurement'])):>16} "
              f"{cell('forward'):>17} {cell('adjoint'):>17}")
    for s in skipped:
        print(f"skipped {s['preset']} ({s['spec']}): {s['reason']}")

    result = {"env": env, "presets": rows, "skipped": skipped}
    if not args.no_skimage:
        # skimage is single-threaded: also compare with one torch thread (like for like per core)
        threads = [torch.get_num_threads()] + ([1] if torch.get_num_threads() > 1 else [])
        result["ct_vs_skimage"] = {}
        for t in threads:
            torch.set_num_threads(t)
            ct = result["ct_vs_skimage"][f"threads={t}"] = bench_ct_vs_skimage(args.size, args.repeats, args.device)
            print(f"\nCT vs scikit-image, {args.size}×{args.size} Shepp–Logan phantom, 180 views, {t} torch "
                  f"thread{'s' if t > 1 else ''} (ms, median (min)):")
            for ours, sk, what in (("ours_radon", "skimage_radon", "radon"), ("ours_fbp", "skimage_iradon", "fbp")):
                print(f"  {what:<6} ours {ct[ours]['median_ms']:8.1f} ({ct[ours]['min_ms']:6.1f})   skimage "
                      f"{ct[sk]['median_ms']:8.1f} ({ct[sk]['min_ms']:6.1f})   speed-up "
                      f"×{ct[what + '_speedup_median']:.2f} (×{ct[what + '_speedup_min']:.2f} on minima)   "
                      f"rel. L2 vs skimage {ct[what + '_rel_l2']:.1e}")
            print(f"  adjoint (exact Aᵀ, no skimage counterpart) {ct['ours_adjoint']['median_ms']:.1f} "
                  f"({ct['ours_adjoint']['min_ms']:.1f})")
        torch.set_num_threads(threads[0])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
