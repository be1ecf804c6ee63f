"""Training recipes side by side: each candidate trains the same architecture on the same data for the same number
of images seen, and at every evaluation point its denoiser PSNR on held-out images is measured at
σ ∈ {0.05, 0.1, 0.2, 0.4, 1.0} (on the [0, 1] scale; the prior sees 2σ on [-1, 1]), for the EMA weights (what ships)
and the raw weights, with the training seconds so far.

Candidates (``--candidates``, comma-separated; ``CANDIDATES`` below):
  ddpm         today's recipe: ε-prediction, uniform timesteps, constant lr after warm-up, EMA 0.999
  ddpm-cosine  the same with a cosine learning-rate decay to 0 at the last step
  edm          EDM preconditioning, log-normal noise levels and loss weighting (Karras et al. 2022; priors.precond)
  edm-cosine   both
  crop32       today's recipe on 32×32 crops instead of --size (convolutional priors, ``--crop random``): a step
               costs about a quarter, so it takes 4× the steps, evaluated at the same pixels seen; tested on the
               same --size centre crops as the others (the network is convolutional)
  crop32-g8    crop32 with 8 GroupNorm groups instead of 32 (at 32 channels, 32 groups normalise each channel alone;
               the faces64 colour casts of sessions 11-12): the baseline of the two below
  wide48-g8    width: crop32-g8 with 48 base channels instead of 32 (3.5 M parameters, about 2× the cost of a
               step), so it takes half crop32's steps and is evaluated at about the same CPU time
  deep2-g8     depth: crop32-g8 with 2 residual blocks per level instead of 1 (2.3 M parameters, about 1.4× the
               cost of a step), so it takes 2.8/4 of crop32's steps
  crop32-ema   EMA length: crop32 with six more EMA profiles kept beside the shipped one in the same run (fixed
               decays 0.99, 0.995, 0.998; power-function EMAs of relative length 0.05, 0.15, 0.25, Karras et al.
               2024; ``priors.train.ema_decay``), each measured at every point (``emas`` in the JSON). Today's
               ``--ema 0.999`` is, before step 9,000, itself an average over the run so far of relative length
               0.09 (docs/priors.md, EMA length)

A candidate's ``_arch`` entries replace those of ``--arch`` (the network then trains from a JSON architecture);
``_steps_factor`` scales both ``--steps`` and ``--eval-every``, so candidates of different cost per step meet at the
same evaluation points in CPU time rather than in images seen.

Every candidate is one resumable ``priors.train.fit`` run in ``--work/NAME`` (chunks of ``--eval-every`` steps); the
results JSON is rewritten after every evaluation and finished points are skipped, so the script is run again to go
on after an interruption. The noise of every evaluation is fixed (one generator per σ), the same for all candidates.

``--table`` prints the markdown table of a results JSON (EMA weights; in brackets the difference from the first
candidate at the same evaluation point: the same images seen, for ``crop32`` the same pixels seen, for the width and
depth candidates about the same CPU time, which the table gives beside it). ``--compare time`` takes the difference
at the same training seconds instead, the first candidate's curve interpolated linearly between its points: the fair
comparison of networks that cost different times per step.
``--test-crop centre`` tests on native-scale centre crops of --size (photographs, scans) instead of whole images
resized to --size (aligned faces).

Usage (the figures in docs/priors.md)::

    OMP_NUM_THREADS=1 python benchmarks/train_recipes.py --data ../shared/data/train/faces64 \\
        --test ../shared/data/test/faces64 --arch cpu64 --size 64 --steps 500 --eval-every 125 \\
        --json docs/priors/recipes_faces64.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from priors.base import DiffusionPrior, PriorCard  # noqa: E402
from priors.configs import ARCHITECTURES  # noqa: E402
from priors.train import ImageFolder, TrainConfig, core, ema_decay, fit, make_network  # noqa: E402

SIGMAS = (0.05, 0.1, 0.2, 0.4, 1.0)
CANDIDATES = {
    "ddpm": {},
    "edm": {"precond": "edm"},
    "ddpm-cosine": {"lr_schedule": "cosine"},
    "edm-cosine": {"precond": "edm", "lr_schedule": "cosine"},
    "crop32": {"size": 32, "_steps_factor": 4},
    "crop32-g8": {"size": 32, "_steps_factor": 4, "_arch": {"norm_groups": 8}},
    "wide48-g8": {"size": 32, "_steps_factor": 2, "_arch": {"num_channels": 48, "norm_groups": 8}},
    "deep2-g8": {"size": 32, "_steps_factor": 2.8, "_arch": {"num_res_blocks": 2, "norm_groups": 8}},
    "crop32-ema": {"size": 32, "_steps_factor": 4, "_emas": ("0.99", "0.995", "0.998", "rel:0.05", "rel:0.15",
                                                             "rel:0.25")},
}


def candidate_arch(name: str, arch: str) -> str:
    """--arch, or for a candidate with ``_arch`` overrides the JSON of --arch's arguments with them replaced."""
    overrides = CANDIDATES[name].get("_arch")
    if not overrides:
        return arch
    base = ARCHITECTURES[arch] if arch in ARCHITECTURES else json.loads(arch)
    return json.dumps(dict(base, **overrides), sort_keys=True)


@torch.no_grad()
def denoiser_psnr(net: torch.nn.Module, cfg: TrainConfig, clean01: torch.Tensor, batch: int = 32) -> dict[str, float]:
    """Mean PSNR (dB) of D(x + σn, σ), clamped to [0, 1], against x for each σ of SIGMAS."""
    from restore.metrics import psnr

    card = PriorCard(name="candidate", image_size=cfg.size, channels=cfg.channels, domain="", schedule=cfg.schedule)
    prior = DiffusionPrior(net.eval(), card)
    out = {}
    for sigma in SIGMAS:
        g = torch.Generator().manual_seed(int(sigma * 1e4))
        noisy = clean01 + sigma * torch.randn(clean01.shape, generator=g)
        den = torch.cat([prior.denoise(noisy[i:i + batch] * 2 - 1, 2 * sigma) for i in range(0, len(noisy), batch)])
        den = ((den + 1) / 2).clamp(0, 1)
        out[str(sigma)] = float(np.mean([psnr(d, c) for d, c in zip(den, clean01)]))
    return out


def weights_at(cfg: TrainConfig, work: Path, which: str) -> tuple[torch.nn.Module, int, float]:
    """The EMA ("ema"), raw ("model") or extra-EMA ("ema_extra:SPEC") network of the candidate's latest checkpoint,
    its step and seconds."""
    state = torch.load(work / "checkpoint.pt", map_location="cpu", weights_only=True)
    net = make_network(cfg.adm_config(), cfg.precond, cfg.schedule)
    if which.startswith("ema_extra:"):
        shadow = state["ema_extra"][which.split(":", 1)[1]]
        with torch.no_grad():
            for p, v in zip(net.parameters(), shadow, strict=True):
                p.copy_(v)
    else:
        core(net).load_state_dict(state[which])
    return net, int(state["step"]), float(state["seconds"])


def markdown_table(results: dict, compare: str = "point") -> str:
    """The EMA denoiser PSNR of every candidate at every evaluation point (images seen, training hours), with the
    difference from the first candidate: at the same evaluation point (``compare="point"``), or at the same training
    seconds (``"time"``: the first candidate's PSNR interpolated linearly in seconds between its points; no
    difference outside its range)."""
    cands = results["candidates"]
    first = next(iter(cands))
    base = [p["ema"] for p in cands[first]["points"]]  # compared at the same evaluation point
    base_t = [p["train_seconds"] for p in cands[first]["points"]]
    sigmas = [str(s) for s in results["setup"]["sigmas"]]
    lines = ["| recipe | images seen | CPU h | " + " | ".join(f"σ = {s}" for s in sigmas) + " |",
             "|---|---|---|" + "---|" * len(sigmas)]
    for name, rows in cands.items():
        for k, p in enumerate(rows["points"]):
            cells = []
            for s in sigmas:
                v = p["ema"][s]
                diff = None
                if name != first and compare == "point" and k < len(base):
                    diff = v - base[k][s]
                elif name != first and compare == "time" and base_t[0] <= p["train_seconds"] <= base_t[-1]:
                    diff = v - float(np.interp(p["train_seconds"], base_t, [b[s] for b in base]))
                cells.append(f"{v:.2f}" + (f" ({diff:+.2f})" if diff is not None else ""))
            size = rows["recipe"].get("size", results["setup"]["size"])
            seen = f"{p['images_seen']:,}" + (f" ({size}² crops)" if size != results["setup"]["size"] else "")
            lines.append(f"| {name} | {seen} | {p['train_seconds'] / 3600:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def relative_length(spec: str, steps: int) -> float:
    """The relative standard deviation of the average that EMA profile ``spec`` (``ema_decay``) takes over the
    ``steps`` updates so far, the update times measured as a fraction of ``steps``: Karras et al.'s σ_rel, which a
    fixed decay shortens as the run grows (0.999 after 30,000 steps: 0.033)."""
    w = np.zeros(steps)
    for t in range(steps):
        b = ema_decay(spec, t)
        w *= b
        w[t] = 1 - b
    x = np.arange(1, steps + 1) / steps
    mean = float((w * x).sum() / w.sum())
    return float(np.sqrt((w * (x - mean) ** 2).sum() / w.sum()))


def ema_table(results: dict, name: str, index: int = -1) -> str:
    """Candidate ``name``'s EMA profiles at its evaluation point ``index``: the denoiser PSNR of each profile at every
    σ (in brackets the difference from the shipped ``--ema``), with each profile's relative length at that step."""
    rows = results["candidates"][name]
    p, shipped = rows["points"][index], str(rows["recipe"]["ema"])
    sigmas = [str(s) for s in results["setup"]["sigmas"]]
    profiles = {"raw weights": (p["raw"], None), f"{shipped} (shipped)": (p["ema"], shipped)}
    profiles |= {spec: (v, spec) for spec, v in p.get("emas", {}).items()}
    lines = [f"{name}, step {p['step']:,} ({p['train_seconds'] / 3600:.2f} CPU h)", "",
             "| EMA | σ_rel | " + " | ".join(f"σ = {s}" for s in sigmas) + " |",
             "|---|---|" + "---|" * len(sigmas)]
    for label, (values, spec) in sorted(profiles.items(),
                                        key=lambda kv: -1 if kv[1][1] is None else relative_length(kv[1][1],
                                                                                                   p["step"])):
        rel = "0" if spec is None else f"{relative_length(spec, p['step']):.3f}"
        cells = [f"{values[s]:.2f}" + ("" if spec == shipped else f" ({values[s] - p['ema'][s]:+.2f})")
                 for s in sigmas]
        lines.append(f"| {label} | {rel} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="training images")
    ap.add_argument("--test", required=True, help="held-out images for the denoiser PSNR")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--arch", default="cpu64")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--crop", default="resize")
    ap.add_argument("--test-crop", default="resize", choices=("resize", "centre"),
                    help="test images: resized to --size, or their native-scale centre crops of --size")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--test-limit", type=int, default=64)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "restore" / "recipes"))
    ap.add_argument("--json", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--table", action="store_true", help="print the markdown table of --json and stop (no training)")
    ap.add_argument("--compare", default="point", choices=("point", "time"),
                    help="--table: differences from the first candidate at the same evaluation point, or at the "
                         "same training seconds (interpolated)")
    ap.add_argument("--emas", default="", metavar="CANDIDATE",
                    help="--table: the EMA profiles of this candidate (crop32-ema) at each of its points instead")
    args = ap.parse_args()
    if args.table and args.emas:
        results = json.loads(Path(args.json).read_text())
        print("\n\n".join(ema_table(results, args.emas, k)
                           for k in range(len(results["candidates"][args.emas]["points"]))))
        return
    if args.table:
        print(markdown_table(json.loads(Path(args.json).read_text()), args.compare))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [c for c in args.candidates.split(",") if c not in CANDIDATES]
    if unknown:
        sys.exit(f"unknown candidate(s) {', '.join(unknown)}; use {', '.join(CANDIDATES)}.")

    out_path = Path(args.json)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results.setdefault("setup", dict(data=args.data, test=args.test, arch=args.arch, size=args.size,
                                     batch_size=args.batch_size, lr=args.lr, steps=args.steps, sigmas=SIGMAS,
                                     test_images=args.test_limit, test_crop=args.test_crop,
                                     threads=torch.get_num_threads()))
    test = ImageFolder(args.test, args.size, args.channels, "random" if args.test_crop == "centre" else "resize",
                       max_images=args.test_limit)
    clean01 = (test.fixed() + 1) / 2
    folders: dict[int, ImageFolder] = {}
    print(f"{len(clean01)} test images", flush=True)

    for name in args.candidates.split(","):
        settings = {k: v for k, v in CANDIDATES[name].items() if not k.startswith("_")}
        factor = CANDIDATES[name].get("_steps_factor", 1)
        if settings.get("size", args.size) != args.size and args.crop != "random":
            sys.exit(f"candidate {name} trains on other crops than --size: it needs --crop random.")
        settings = {"size": args.size} | settings
        if settings["size"] not in folders:
            folders[settings["size"]] = ImageFolder(args.data, settings["size"], args.channels, args.crop)
        data = folders[settings["size"]]
        every = round(args.eval_every * factor)
        steps = every * (args.steps // args.eval_every)
        cfg = TrainConfig(data=args.data, name=name, out="", channels=args.channels,
                          arch=candidate_arch(name, args.arch), crop=args.crop, steps=steps,
                          batch_size=args.batch_size, lr=args.lr, checkpoint_every=every,
                          work_dir=str(Path(args.work) / name), device="cpu", **settings)
        rows = results.setdefault("candidates", {}).setdefault(name, {"recipe": dataclasses.asdict(cfg), "points": []})
        rows["recipe"]["steps"] = max(rows["recipe"]["steps"], steps)  # a run continued with a larger --steps
        results["setup"]["steps"] = max(results["setup"]["steps"], args.steps)
        if "parameters" not in rows:  # setdefault would build the network on every resume too
            net = make_network(cfg.adm_config(), cfg.precond, cfg.schedule)
            rows["parameters"] = sum(p.numel() for p in net.parameters())
        done = {p["step"] for p in rows["points"]}
        for stop in range(every, steps + 1, every):
            if stop in done:
                continue
            ckpt = Path(cfg.work_dir) / "checkpoint.pt"
            if ckpt.exists() and int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"]) > stop:
                sys.exit(f"{ckpt} is past step {stop} but its evaluation is missing from {out_path}; remove the "
                         f"candidate's work folder to measure it again.")
            t0 = time.perf_counter()
            emas = CANDIDATES[name].get("_emas", ())
            fit(cfg, data, log=lambda m: print(f"[{name}] {m}", flush=True), stop_at=stop, extra_emas=emas)
            point = {"step": stop, "images_seen": stop * args.batch_size,
                     "pixels_seen": stop * args.batch_size * cfg.size**2}
            for which in ("ema", "model"):
                net, step, seconds = weights_at(cfg, Path(cfg.work_dir), which)
                point["train_seconds"] = round(seconds, 1)
                point["ema" if which == "ema" else "raw"] = denoiser_psnr(net, cfg, clean01)
            for spec in emas:
                point.setdefault("emas", {})[spec] = denoiser_psnr(weights_at(cfg, Path(cfg.work_dir),
                                                                              f"ema_extra:{spec}")[0], cfg, clean01)
            rows["points"].append(point)
            tmp = out_path.with_name(out_path.name + ".part")
            tmp.write_text(json.dumps(results, indent=1) + "\n")
            os.replace(tmp, out_path)
            print(f"[{name}] step {stop} ({time.perf_counter() - t0:.0f} s): EMA "
                  + " ".join(f"{s}:{v:.2f}" for s, v in point["ema"].items())
                  + " | raw " + " ".join(f"{s}:{v:.2f}" for s, v in point["raw"].items()), flush=True)


if __name__ == "__main__":
    main()
