"""Quality against compute for a latent prior's autoencoder: train it (resumably) in chunks and measure, after each
chunk, the mean reconstruction PSNR of Dec(Enc(x)) on a test folder — the ``faces64-latent`` target of the priors
issue (``prior_targets.py``'s ``latent-ae``: every test face, ≥ 32 dB) — then project the steps a log-linear trend
needs for the target.

Each run trains ``priors.latent_train.train_autoencoder`` (the recipe of ``restore prior train --latent``: L1
reconstruction + KL 10⁻⁶, AdamW 4·10⁻⁴, batch 16 unless given) in its own work folder under ``--work``, named by its
architecture; running the same command again continues from the last checkpoint and skips the chunks already
measured. The projection fits PSNR = a + b·log₂(steps) to the last ``--fit-last`` points and solves for the
target: b is the gain per doubling of the training. An autoencoder saturates at its capacity, so the projection is
a lower bound on the compute.

Usage (the curve in docs/priors.md, ``faces64-latent``)::

    OMP_NUM_THREADS=1 python benchmarks/autoencoder_curve.py --work ~/.cache/restore/ae-curve \\
        --arch '{"base_channels": 32, "num_res_blocks": 1}' --chunk 500 --until 3000 --json docs/priors/ae_curve.json
    python benchmarks/autoencoder_curve.py --json docs/priors/ae_curve.json --table
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from restore.io import find_images, load_image  # noqa: E402
from restore.metrics import psnr  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_name(arch: dict, lr_schedule: str = "constant", until: int = 0) -> str:
    """A stable folder name for an architecture (its JSON, sorted) and, for a cosine learning-rate schedule, the
    step at which it ends (a constant-rate run's name is its architecture's alone, as before)."""
    key = arch if lr_schedule == "constant" else dict(arch, lr_schedule=[lr_schedule, until])
    text = json.dumps(key, sort_keys=True)
    return "ae-" + hashlib.sha256(text.encode()).hexdigest()[:10]


@torch.no_grad()
def test_psnr(checkpoint: Path, images: torch.Tensor, batch: int = 50) -> float:
    """Mean PSNR of Dec(Enc(x)) (the posterior mean latent) over ``images`` on [0, 1], from a training checkpoint."""
    from priors.autoencoder import AutoencoderConfig, SmallAutoencoder

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = SmallAutoencoder(AutoencoderConfig.from_dict(state["autoencoder"])).eval()
    model.load_state_dict(state["model"])
    scores = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        r = ((model.decode(model.encode(x * 2 - 1)) + 1) / 2).clamp(0, 1)
        scores += [psnr(a, b) for a, b in zip(r, x)]
    return float(np.mean(scores))


def projection(points: list[dict], target: float, last: int) -> dict:
    """Least-squares PSNR = a + b·log₂(steps) over the last ``last`` points; the steps at which it reaches
    ``target`` (None when the trend does not rise)."""
    pts = sorted(points, key=lambda p: p["steps"])[-last:]
    if len(pts) < 2:
        return {"per_doubling": None, "steps_needed": None, "points": len(pts)}
    b, a = np.polyfit(np.log2([p["steps"] for p in pts]), [p["psnr"] for p in pts], 1)
    reach = None if b <= 0 else float(2 ** ((target - a) / b))
    return {"per_doubling": float(b), "steps_needed": reach, "points": len(pts)}


def table(results: dict) -> str:
    lines = ["| run | steps | images seen | training seconds | test PSNR dB |", "|---|---|---|---|---|"]
    notes = []
    for name, run in results.get("runs", {}).items():
        for p in sorted(run["points"], key=lambda p: p["steps"]):
            lines.append(f"| {run['label']} | {p['steps']:,} | {p['steps'] * run['batch_size']:,} | "
                         f"{p['seconds']:.0f} | {p['psnr']:.2f} |")
        pr = run.get("projection") or {}
        if pr.get("per_doubling") is not None:
            need = pr["steps_needed"]
            notes.append(f"- {run['label']}: {pr['per_doubling']:+.2f} dB per doubling of the steps over the last "
                         f"{pr['points']} points; {results['target']:g} dB projected at "
                         f"{'never (no rise)' if need is None else f'{need:,.0f} steps'}")
    return "\n".join(lines + [""] + notes)


def save(path: Path, name: str, run: dict, target: float) -> dict:
    """Write this run's entry into the JSON as it is now on disk (runs of other architectures may be measured at the
    same time by other processes), atomically; returns the whole."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("target", target)
    results.setdefault("runs", {})[name] = run
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--table", action="store_true", help="print the markdown table of --json and exit")
    ap.add_argument("--data", default=str(SHARED / "train" / "faces64"))
    ap.add_argument("--test", default=str(SHARED / "test" / "faces64"))
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "restore" / "ae-curve")
    ap.add_argument("--arch", default='{"base_channels": 32, "num_res_blocks": 1}',
                    help="JSON dict of autoencoder arguments (restore prior train --autoencoder-arch)")
    ap.add_argument("--label", default="", help="the run's name in the table (default: the --arch JSON)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=500, help="steps between measurements")
    ap.add_argument("--until", type=int, default=3000, help="train to this many steps")
    ap.add_argument("--target", type=float, default=32.0)
    ap.add_argument("--fit-last", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                    help="cosine: the learning rate decays to 0 at --until (the points before it are mid-schedule)")
    args = ap.parse_args(argv)
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    if args.table:
        print(table(results))
        return 0
    from priors.latent_train import train_autoencoder

    torch.set_num_threads(args.threads)
    arch = json.loads(args.arch)
    name = run_name(arch, args.lr_schedule, args.until)
    results.setdefault("target", args.target)
    run = results.setdefault("runs", {}).setdefault(name, {"arch": arch, "label": args.label or json.dumps(arch),
                                                           "batch_size": args.batch_size, "points": []})
    if args.lr_schedule != "constant":
        run["lr_schedule"] = [args.lr_schedule, args.until]
    if run["batch_size"] != args.batch_size:
        ap.error(f"run {name} was measured with batch {run['batch_size']}; give that --batch-size or another --json")
    test = torch.stack([load_image(p) for p, _ in find_images([args.test])])
    done = {p["steps"] for p in run["points"]}
    work = args.work / name
    checkpoint = work / "train" / "checkpoint.pt"
    current = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"]) if checkpoint.exists() else 0
    for steps in sorted(set(range(args.chunk, args.until + 1, args.chunk)) | ({current} if current else set())):
        if steps < current or steps in done:  # trained past it already, or measured
            continue
        t0 = time.perf_counter()
        train_autoencoder(args.data, work / "out", steps=steps, batch_size=args.batch_size, config=arch,
                          work_dir=str(work / "train"), name="autoencoder", log=lambda s: None,
                          lr_schedule=args.lr_schedule, schedule_steps=args.until)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        point = {"steps": int(state["step"]), "seconds": float(state["seconds"]), "psnr": test_psnr(checkpoint, test)}
        run["points"].append(point)
        run["projection"] = projection(run["points"], args.target, args.fit_last)
        results = save(args.json, name, run, args.target)
        print(f"{run['label']}: step {point['steps']}, {point['psnr']:.2f} dB on {len(test)} test images "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
