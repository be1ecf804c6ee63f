"""Seconds per image on the CPU: an earlier revision's code path against this tree's, in one run.

Each configuration (image size × task × solver) runs in a fresh subprocess on the same image, seed and thread
count, alternating the two code paths and repeating (``--repeats``; the fastest run counts), so both see the same
machine load. The earlier revision is checked out as a git worktree (``--before``, default the commit before this
script's changes: ``9858282``); this tree's path is ``restore.acceleration``'s defaults (channels-last, the fused
attention kernel, tiles for images with a side over 1024) unless ``--after-accel`` says otherwise. Per configuration:
seconds per image for each path, their ratio, each path's PSNR, and the largest pixel difference between the two
outputs (the new path must compute the same restoration up to float round-off: equal quality).

``--steps`` caps the solvers' steps to keep the run short (time per image is proportional to the network
evaluations, so the ratio does not depend on it).

Usage (figures in docs/benchmarks.md)::

    python benchmarks/cpu_speed.py --image ../shared/data/test/kodak24/kodim03.png --sizes 256,512 \\
        --steps 20 --threads 2 --json docs/cpu_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sr4": "sr:factor=4", "deblur-gauss": "blur:kind=gaussian,size=61,std=3.0"}
SOLVERS = {"ddnm": "default", "daps": "daps-100", "reddiff": "fast"}


def worker(cfg: dict) -> dict:
    """One solve in this process, with ``cfg["tree"]``'s code; returns seconds, NFE and PSNR, and saves the output."""
    sys.path.insert(0, cfg["tree"])
    import torch

    torch.set_num_threads(cfg["threads"])
    import priors
    from operators.registry import build, measure
    from restore.io import load_image
    from restore.metrics import psnr
    from restore.solvers import SOLVERS as known
    from restore.solvers import get_solver, solve

    assert Path(priors.__file__).resolve().is_relative_to(Path(cfg["tree"]).resolve()), priors.__file__
    prior = priors.resolve("natural")
    evaluation = {}
    if cfg["accel"] is not None:
        from restore.acceleration import Acceleration, prepare

        evaluation = prepare(prior, torch.device("cpu"), Acceleration(**cfg["accel"]))
    img = load_image(cfg["image"])
    s = cfg["size"]
    if min(img.shape[1:]) < s:
        raise SystemExit(f"{cfg['image']} is {img.shape[1]}×{img.shape[2]}, smaller than --sizes {s}; give a larger "
                         f"image.")
    top, left = (img.shape[1] - s) // 2, (img.shape[2] - s) // 2
    x = img[:, top:top + s, left:left + s][None].contiguous()
    op = build(cfg["task"], x.shape[1:], seeds=[0])
    y = measure(op, x, 0.01, [0])
    cls = known[cfg["solver"]]
    solver = get_solver(cfg["solver"], preset=cfg["preset"], **({cls.steps_param: cfg["steps"]} if cfg["steps"] else {}))
    result = solve(solver, y, op, prior, [0], noise=0.01)
    torch.save(result.x, cfg["save"])
    return dict(seconds=result.cost.seconds, nfe=result.cost.nfe, psnr=psnr(result.x[0], x[0]),
                peak_memory_mb=result.cost.peak_memory_mb, evaluation=evaluation)


def run_worker(tree: Path, accel, **cfg) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        save = str(Path(tmp) / "x.pt")
        cfg = dict(cfg, tree=str(tree), accel=accel, save=save)
        env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]))
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True,
                              env=env, cwd=str(tree))
        if done.returncode != 0:
            raise RuntimeError(f"worker failed in {tree}:\n{done.stderr[-3000:]}")
        import torch

        out = json.loads(done.stdout.strip().splitlines()[-1])
        out["x"] = torch.load(save)
        return out


def worktree(rev: str) -> Path:
    path = Path.home() / ".cache" / "restore" / "worktrees" / rev
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
    return path


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--solvers", default=",".join(SOLVERS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--before", default="9858282")
    ap.add_argument("--after-accel", default="{}", help="JSON arguments of restore.acceleration.Acceleration")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    before = worktree(args.before)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for task in args.tasks.split(","):
            for solver in args.solvers.split(","):
                cfg = dict(image=str(Path(args.image).resolve()), size=size, task=TASKS[task], solver=solver,
                           preset=SOLVERS[solver], steps=args.steps, threads=args.threads)
                runs = {"before": [], "after": []}
                for _ in range(args.repeats):
                    runs["before"].append(run_worker(before, None, **cfg))
                    runs["after"].append(run_worker(ROOT, json.loads(args.after_accel), **cfg))
                b = min(runs["before"], key=lambda r: r["seconds"])
                a = min(runs["after"], key=lambda r: r["seconds"])
                row = dict(size=size, task=task, solver=f"{solver}:{SOLVERS[solver]}", steps=args.steps,
                           nfe=a["nfe"], threads=args.threads,
                           seconds_before=round(b["seconds"], 2), seconds_after=round(a["seconds"], 2),
                           speedup=round(b["seconds"] / a["seconds"], 3),
                           psnr_before=round(b["psnr"], 3), psnr_after=round(a["psnr"], 3),
                           max_abs_diff=float((a["x"] - b["x"]).abs().max()),
                           peak_mb_before=round(b["peak_memory_mb"]), peak_mb_after=round(a["peak_memory_mb"]),
                           evaluation=a["evaluation"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(before=args.before, image=args.image, rows=rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
