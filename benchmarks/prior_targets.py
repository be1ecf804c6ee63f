"""The target table of the priors issue: each embedded prior's restorations against a simple method on the test split.

Every target names a task, the classical method it must beat and by how much ("best": the best of the listed
solvers must clear the margin; "every": each of them must). Each task runs through ``restore.bench.bench`` with
every classical baseline that takes it (``--baselines auto``), so the strongest simple method on the same images is
reported beside the one the target names; the gain is the paired per-image PSNR difference with its 95%
t-interval, and LPIPS is given beside it (the two often disagree). A target counts as met when the mean gain clears
the margin; ``sure`` says whether the lower end of the interval does too.

Two targets are not solver runs:
  * ``natural`` denoising: the prior's own denoiser D(x + σn, σ) (one network evaluation, Tweedie's formula) against
    BM3D (PyPI ``bm3d``, true σ) on whole CBSD68 photographs, per image, same noise; BM3D's scores are cached in the
    output folder (they do not depend on the prior).
  * ``faces64-latent`` autoencoder: the mean reconstruction PSNR of Dec(Enc(x)) over every test face.

Test data (``../shared/data/test``) is used in place; two tasks need a prepared copy, made once under ``--work``:
CBSD68 centre crops of 128×128 for the photograph solver tasks (a whole 481×321 photograph takes ~2 s per network
evaluation on one core), and the CT test DICOMs in the HU window [-1000, 1000] resized to 128×128 (antialiased
bicubic, float TIFF), the ``ct`` prior's native size. Every bench folder resumes: finished images are read back, so
an interrupted run is continued by running the same command again.

Usage (the table in docs/priors.md)::

    OMP_NUM_THREADS=1 python benchmarks/prior_targets.py --work ~/.cache/restore/targets --threads 1 \\
        --json docs/priors/targets.json
    python benchmarks/prior_targets.py --json docs/priors/targets.json --table

``--samples 1,4`` also judges the solver tasks on the mean of 4 posterior samples per image (``restore solve
--samples 4``; 4× the solver time), each K on its own row: one sample has about twice the posterior mean's squared
error, so the mean is what PSNR rewards, while LPIPS rewards the single sample. ``--only ID,ID`` runs some targets;
``--equivariant dihedral`` adds a row per denoiser target for the prior's denoiser averaged over the 8 symmetries
of the square (``restore --equivariant``; 8 evaluations). ``--weights NAME=FILE`` evaluates a candidate weight file
in place of an embedded prior (give it its own ``--work`` so that the shipped prior's finished images are not read
back). ``--update dpir --only mri-4x,mri-8x`` re-measures one solver after a change to it and keeps the other
solvers' stored figures (the baselines run again and must agree with the stored ones); the target's work folder
keeps every solver's rows in its results.json and report (a solver the target no longer lists is dropped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import tempfile
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import priors  # noqa: E402
from priors.base import SYMMETRIES  # noqa: E402
from restore.bench import bench, parse_samples, sample_label, spread, write_report, write_results  # noqa: E402
from restore.io import find_images, load_image, save_image  # noqa: E402
from restore.metrics import psnr  # noqa: E402
from restore.report import mean_ci, summary  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: the MRI targets' solvers; a plain name runs the preset the command line picks for MRI (dps, ddrm, diffpir and
#: dpir: their `mri` presets)
ALL_PIXEL_SOLVERS = ("dps", "ddnm", "daps:daps-100", "reddiff:fast", "ddrm", "ddrm:low-start", "ddnm:low-start",
                     "diffpir", "pigdm", "dpir")


@dataclasses.dataclass(frozen=True)
class Target:
    id: str
    prior: str
    text: str                       # the issue's wording
    data: str                       # a test folder name, or "cbsd68-c128" / "ct128" (prepared under --work)
    task: str = ""                  # operator spec (bench tasks)
    kind: str = "bench"             # bench | denoiser | autoencoder
    solvers: tuple = ()
    baseline: str = ""              # the method the target names
    margin: float = 0.0             # dB over it (or, for the autoencoder, the PSNR itself)
    rule: str = "best"              # best | every
    limit: int = 0
    noise: float = 0.025
    sigmas: tuple = ()


TARGETS = (
    Target("natural-denoise", "natural", "denoising ≥ BM3D at σ = 0.05–0.2", "cbsd68", kind="denoiser",
           baseline="bm3d", limit=8, sigmas=(0.05, 0.1, 0.2)),
    Target("natural-sr4", "natural", "best solver SR×4 ≥ bicubic + 0.5 dB", "cbsd68-c128", "sr4",
           solvers=("ddnm:low-start", "ddrm:low-start", "dpir"), baseline="bicubic", margin=0.5, limit=16),
    Target("natural-deblur", "natural", "Gaussian deblur ≥ Wiener + 1.5 dB", "cbsd68-c128", "deblur-gauss",
           solvers=("ddrm", "ddnm", "dpir"), baseline="wiener", margin=1.5, limit=16),
    Target("faces64-sr4", "faces64", "SR×4 best solver ≥ bicubic + 1.5 dB", "faces64", "sr4",
           solvers=("ddnm:low-start", "ddrm:low-start", "dpir"), baseline="bicubic", margin=1.5, limit=32),
    Target("faces64-inpaint", "faces64", "70% random inpainting ≥ biharmonic + 1 dB", "faces64", "inpaint-random",
           solvers=("diffpir", "pigdm", "dpir"), baseline="biharmonic", margin=1.0, limit=32),
    Target("ct-60", "ct", "60 views ≥ FBP + 1 dB", "ct128", "ct:views=60", solvers=("reddiff:fast", "diffpir", "dpir"),
           baseline="fbp", margin=1.0, limit=4),
    Target("ct-30", "ct", "30 views ≥ FBP + 3 dB", "ct128", "ct:views=30", solvers=("reddiff:fast", "diffpir", "dpir"),
           baseline="fbp", margin=3.0, limit=4),
    Target("mri-4x", "brain-mri", "4× every solver ≥ zero-filled + 3 dB", "brain_mri128", "mri-4x",
           solvers=ALL_PIXEL_SOLVERS, baseline="zerofill", margin=3.0, rule="every", limit=6),
    Target("mri-8x", "brain-mri", "8× every solver ≥ zero-filled + 1 dB", "brain_mri128", "mri-8x",
           solvers=ALL_PIXEL_SOLVERS, baseline="zerofill", margin=1.0, rule="every", limit=6),
    Target("latent-ae", "faces64-latent", "autoencoder reconstruction ≥ 32 dB", "faces64", kind="autoencoder",
           margin=32.0),
    Target("latent-sr4", "faces64-latent", "ReSample and latent DAPS ≥ A⁺y on SR×4", "faces64", "sr4",
           solvers=("resample:fast", "daps:latent-sr4"), baseline="pinv", margin=0.0, rule="every", limit=8),
)


# ----------------------------------------------------------------------------------------------------- test data
def prepared(name: str, work: Path, shared: Path) -> Path:
    """The folder of a target's test images (made once under ``work`` for the prepared ones).

    A prepared folder is written under a private name and renamed into place when complete, so a run that is
    killed part-way, or a second run started at the same time, never sees (and never benchmarks) a partial set.
    """
    if name not in ("cbsd68-c128", "ct128"):
        return shared / "test" / name
    out = work / "data" / name
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        src = "cbsd68" if name == "cbsd68-c128" else "ct_dicom"
        for path, rel in find_images([str(shared / "test" / src)]):
            im = load_image(path)
            if name == "cbsd68-c128":
                h, w = im.shape[-2:]
                top, left = (h - 128) // 2, (w - 128) // 2
                save_image(tmp / rel.with_suffix(".png"), im[:, top:top + 128, left:left + 128])
            else:  # the HU window [-1000, 1000] → [0, 1] that restore applies to DICOM
                im = F.interpolate(im[None], size=(128, 128), mode="bicubic", antialias=True,
                                   align_corners=False)[0].clamp(0, 1)
                save_image(tmp / rel.with_suffix(".tif"), im)
        try:
            os.rename(tmp, out)
        except OSError:  # another run finished the same folder first: keep theirs
            if not out.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------------- measuring
def paired(rows: list[dict], a: str, b: str, metric: str) -> dict:
    """Mean and 95% t-interval of a − b over the images both restored (positive = a higher)."""
    per = {}
    for r in rows:
        if r.get("status") == "written" and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]):
            per.setdefault(r["solver"], {})[r["image"]] = r[metric]
    common = sorted(set(per.get(a, {})) & set(per.get(b, {})))
    m, h, n = mean_ci([per[a][i] - per[b][i] for i in common])
    return {"mean": m, "half": h, "n": n}


def method_means(rows: list[dict]) -> dict:
    """{method: {"psnr", "lpips": mean, "n", "baseline"}} over the written rows of one task."""
    (per,) = summary(rows).values()
    return {k: {"psnr": v["psnr"][0], "lpips": v["lpips"][0], "n": v["psnr"][2], "baseline": v["baseline"]}
            for k, v in per.items()}


def run_bench(t: Target, args, prior: str) -> dict:
    folder = prepared(t.data, args.work, args.shared)
    rows = bench([str(folder)], [t.task], list(t.solvers), prior, args.work / t.id, noise=str(t.noise),
                 limit=t.limit, baselines="auto", threads=args.threads, lpips_weights=args.lpips_weights,
                 samples=args.samples)
    first, *more = args.samples
    out = verdict(t, rows, first)
    if more:  # each further K judged on its own (the headline stays the first K's, one sample by default)
        out["by_samples"] = {str(k): verdict(t, rows, k) for k in more}
    return out


def update_bench(t: Target, args, stored: dict, labels: list[str]) -> dict:
    """Re-measure only the solvers ``labels`` of a bench target (e.g. after a change of one solver's preset) and put
    them into its stored result, the other solvers' figures kept as measured. The baselines run again too, as a check
    that the images and the noise are the same: their means must equal the stored ones (to 0.005 dB: another machine's
    round-off in the iterative ones), else the whole target has to be re-run. The decisive solver, the gain and the
    verdict are recomputed over every solver."""
    prior = args.weights.get(t.prior, t.prior)
    sha = priors.resolve(prior).card.sha256
    if stored.get("prior_sha256") != sha:
        raise SystemExit(f"{t.id}: the stored figures are of other prior weights "
                         f"({stored.get('prior_sha256', '?')[:12]}…, now {sha[:12]}…); re-run the whole target.")
    mine = [s for s in labels if s in t.solvers]
    if not mine:
        return stored
    folder = prepared(t.data, args.work, args.shared)
    t0 = time.time()
    kept = args.work / t.id / "results.json"
    earlier = json.loads(kept.read_text()) if kept.is_file() else []
    rows = bench([str(folder)], [t.task], mine, prior, args.work / t.id, noise=str(t.noise), limit=t.limit,
                 baselines="auto", threads=args.threads, lpips_weights=args.lpips_weights, samples=args.samples)
    if earlier:  # the folder's results and report keep every solver (bench wrote only this run's)
        merged = merged_rows(earlier, rows, t.solvers)
        write_results(args.work / t.id, merged)
        write_report(args.work / t.id, merged)
    only = dataclasses.replace(t, solvers=tuple(mine))
    entries = {args.samples[0]: stored} | {int(k): v for k, v in stored.get("by_samples", {}).items()}
    for k in args.samples:
        entry = entries.get(k)
        if entry is None:
            raise SystemExit(f"{t.id}: no stored figures for {k} samples to update; re-run the whole target.")
        fresh = verdict(only, rows, k)
        for name, v in fresh["methods"].items():
            old = entry["methods"].get(name)
            if v["baseline"] and (old is None or abs(old["psnr"] - v["psnr"]) > 0.005):  # round-off of another CPU
                raise SystemExit(f"{t.id}: baseline {name} measures {v['psnr']:.4f} dB now, "
                                 f"{old and old['psnr']} stored: not the same images or noise; re-run the whole "
                                 f"target.")
        for name in [n for n, v in entry["methods"].items()  # a label the target no longer lists (e.g. renamed)
                     if not v["baseline"] and bench_label(n) not in t.solvers]:
            del entry["methods"][name]
            entry["gains"].pop(name, None)
        for name, g in fresh["gains"].items():
            entry["methods"][name] = fresh["methods"][name]
            entry["gains"][name] = g
        entry["refused"] = [s for s in entry.get("refused", []) if s not in fresh["gains"]] + fresh["refused"]
        decisive = (min if t.rule == "every" else max)(entry["gains"], key=lambda s: entry["gains"][s]["psnr"]["mean"])
        g = entry["gains"][decisive]["psnr"]
        entry.update(decisive=decisive, gain=g["mean"], gain_half=g["half"], n=g["n"], met=g["mean"] >= t.margin,
                     sure=(g["mean"] - g["half"]) >= t.margin if math.isfinite(g["half"]) else False)
    stored.setdefault("updates", []).append({"solvers": mine, "seconds": round(time.time() - t0, 1),
                                             "date": time.strftime("%Y-%m-%d")})
    return stored


def bench_label(method: str) -> str:
    """The solver label of a method as bench names it (``sample_label`` undone): 'ddnm (mean of 4)' → 'ddnm'."""
    return method.split(" (")[0]


def merged_rows(earlier: list[dict], fresh: list[dict], solvers: Sequence[str]) -> list[dict]:
    """A bench folder's rows after ``update_bench``: the earlier rows in their order, each method the fresh run
    measured (its solvers and the baselines) replaced by its fresh rows, a solver label the target no longer lists
    dropped, and a method new to the folder placed after the last earlier solver (before the baselines)."""
    def groups(rows):
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault(r["solver"], []).append(r)
        return out

    old, new = groups(earlier), groups(fresh)
    order = [m for m, rs in old.items() if rs[0].get("baseline") or bench_label(m) in solvers]
    last = max((i for i, m in enumerate(order) if not old[m][0].get("baseline") or m == "pinv"), default=-1)
    added = [m for m in new if m not in old]
    order = order[:last + 1] + added + order[last + 1:]
    return [r for m in order for r in new.get(m, old.get(m, []))]


def stochastic(label: str) -> bool:
    """Whether the solver of a bench label ('name' or 'name:preset') draws samples (else K samples are one output);
    a name that is no registered solver counts as one that does."""
    from restore.solvers import SOLVERS

    cls = SOLVERS.get(label.split(":")[0])
    return cls is None or cls.stochastic


def verdict(t: Target, rows: list[dict], samples: int = 1) -> dict:
    """A bench target's figures from its result rows: each solver's paired gain over the named baseline and over
    the strongest baseline, the decisive solver (the best, or for "every" the worst) and whether it clears the
    margin. ``samples`` K > 1 judges the solvers' K-sample means (bench's 'ddnm (mean of 4)' rows) in their place;
    the baselines and the deterministic solvers (dpir) are the same for every K (bench runs them once)."""
    means = method_means(rows)
    base_labels = [k for k, v in means.items() if v["baseline"]]
    strongest = max(base_labels, key=lambda k: means[k]["psnr"])
    strongest_lpips = min(base_labels, key=lambda k: means[k]["lpips"] if math.isfinite(means[k]["lpips"]) else 9)
    solvers = [sample_label(s, samples, "mean") if stochastic(s) else s for s in t.solvers]
    gains = {s: {"psnr": paired(rows, s, t.baseline, "psnr"),
                 "over_strongest": paired(rows, s, strongest, "psnr"),
                 "lpips_reduction": paired(rows, t.baseline, s, "lpips")} for s in solvers if s in means}
    refused = [s for s in solvers if s not in means]
    decisive = (min if t.rule == "every" else max)(gains, key=lambda s: gains[s]["psnr"]["mean"])
    g = gains[decisive]["psnr"]
    return {"methods": means, "gains": gains, "refused": refused, "strongest_baseline": strongest,
            "strongest_baseline_lpips": strongest_lpips, "decisive": decisive, "gain": g["mean"],
            "gain_half": g["half"], "n": g["n"], "met": g["mean"] >= t.margin,
            "sure": (g["mean"] - g["half"]) >= t.margin if math.isfinite(g["half"]) else False,
            "samples": samples}


@torch.no_grad()
def denoiser_scores(prior, files: list, sigma: float, cache_path: Path) -> tuple[list[float], list[float]]:
    """Per image: PSNR of the prior's D(x + σn, σ) and of BM3D on the same noisy image (whole images, cropped to
    the network's size multiple; the noise is seeded by the image's name and σ). BM3D's scores are cached in
    ``cache_path``: they do not depend on the prior."""
    sys.path.append(str(Path(__file__).resolve().parent))  # priors_eval; appended: benchmarks/operators.py is no package
    from priors_eval import bm3d_denoise

    from restore.degrade import image_seed

    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    mult = prior.size_multiple
    ours, theirs = [], []
    for path, rel in files:
        x = load_image(path)
        h, w = (x.shape[-2] // mult) * mult, (x.shape[-1] // mult) * mult
        x = x[:, :h, :w]
        key = f"{rel.as_posix()}:{sigma}"
        g = torch.Generator().manual_seed(image_seed(0, key))
        noisy = x + sigma * torch.randn(x.shape, generator=g)
        d = (prior.denoise(noisy[None] * 2 - 1, 2 * sigma)[0] + 1) / 2
        ours.append(psnr(d.clamp(0, 1), x))
        if key not in cache:
            cache[key] = psnr(bm3d_denoise(noisy, sigma).clamp(0, 1), x)
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache, indent=1))
        theirs.append(cache[key])
    return ours, theirs


def run_denoiser(t: Target, args, prior_name: str) -> dict:
    """The prior's denoiser against BM3D, whole images one by one (same noise for both; BM3D cached); with
    ``args.equivariant`` (a group of ``priors.base.SYMMETRIES``) also the denoiser averaged over that group, judged
    on its own row (``by_symmetry``)."""
    from restore.acceleration import Acceleration, prepare

    prior = priors.resolve(prior_name)
    files = spread(list(find_images([str(prepared(t.data, args.work, args.shared))])), t.limit)
    out = None
    for group in ["off"] + [g for g in getattr(args, "equivariant", []) if g != "off"]:
        prepare(prior, torch.device("cpu"), Acceleration(equivariant=group))
        per_sigma = {}
        for sigma in t.sigmas:
            ours, theirs = denoiser_scores(prior, files, sigma, args.work / t.id / "bm3d_cache.json")
            m, h, n = mean_ci([a - b for a, b in zip(ours, theirs)])
            per_sigma[str(sigma)] = {"prior": statistics.fmean(ours), "bm3d": statistics.fmean(theirs),
                                     "gain": m, "gain_half": h, "n": n}
            print(f"{t.id} ({group}) σ={sigma}: prior {per_sigma[str(sigma)]['prior']:.2f}, BM3D "
                  f"{per_sigma[str(sigma)]['bm3d']:.2f}, gain {m:+.2f} ± {h:.2f}", flush=True)
        worst = min(per_sigma, key=lambda s: per_sigma[s]["gain"])
        w = per_sigma[worst]
        r = {"per_sigma": per_sigma, "decisive": f"σ = {worst}", "gain": w["gain"], "gain_half": w["gain_half"],
             "n": w["n"], "met": w["gain"] >= t.margin, "sure": w["gain"] - w["gain_half"] >= t.margin}
        if out is None:
            out = r
        else:
            out.setdefault("by_symmetry", {})[group] = r | {"symmetry": group}
    return out


@torch.no_grad()
def run_autoencoder(t: Target, args, prior_name: str) -> dict:
    prior = priors.resolve(prior_name)
    files = find_images([str(prepared(t.data, args.work, args.shared))])
    scores = []
    for i in range(0, len(files), 32):
        x = torch.stack([load_image(p) for p, _ in files[i:i + 32]])
        r = ((prior.decode(prior.encode(x * 2 - 1)) + 1) / 2).clamp(0, 1)
        scores += [psnr(a, b) for a, b in zip(r, x)]
    m, h, n = mean_ci(scores)
    return {"psnr": m, "psnr_half": h, "n": n, "decisive": "Dec(Enc(x))", "gain": m - t.margin, "gain_half": h,
            "met": m >= t.margin, "sure": m - h >= t.margin}


def measure(t: Target, args) -> dict:
    prior = args.weights.get(t.prior, t.prior)
    t0 = time.time()
    fn = {"bench": run_bench, "denoiser": run_denoiser, "autoencoder": run_autoencoder}[t.kind]
    out = fn(t, args, prior)
    card = priors.resolve(prior).card
    return out | {"target": dataclasses.asdict(t), "prior_file": str(prior), "prior_sha256": card.sha256,
                  "seconds": round(time.time() - t0, 1)}


# -------------------------------------------------------------------------------------------------------- table
def _f(v, fmt="{:.2f}"):
    return fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _table_row(t: Target, r: dict, text: str) -> str:
    verdict = ("**yes**" if r["sure"] else "yes (interval reaches below)") if r["met"] else "no"
    if t.kind == "bench":
        m = r["methods"]
        base = m[t.baseline]
        strong = r["strongest_baseline"]
        dec = m[r["decisive"]]
        base_cell = f"{t.baseline} {_f(base['psnr'])} dB / {_f(base['lpips'], '{:.3f}')}"
        strong_cell = f"{strong} {_f(m[strong]['psnr'])} dB / {_f(m[strong]['lpips'], '{:.3f}')}"
        dec_cell = f"{r['decisive']} {_f(dec['psnr'])} dB / {_f(dec['lpips'], '{:.3f}')}"
        if t.rule == "every":
            dec_cell = "worst: " + dec_cell
        needed = f"≥ +{t.margin:g}" if t.margin else "≥ 0"
        best = max(r["gains"], key=lambda s: r["gains"][s]["over_strongest"]["mean"])
        o = r["gains"][best]["over_strongest"]
        versus = "(the named one)" if strong == t.baseline else \
            f"{best} {o['mean']:+.2f} [{o['mean'] - o['half']:+.2f}, {o['mean'] + o['half']:+.2f}]"
    elif t.kind == "denoiser":
        base_cell = ", ".join(f"σ {s}: {_f(v['bm3d'])}" for s, v in r["per_sigma"].items())
        strong_cell = "BM3D"
        what = f"prior D(x, σ) averaged over {r['symmetry']}" if r.get("symmetry") else "prior D(x, σ)"
        dec_cell = f"{what}: " + ", ".join(f"{_f(v['prior'])}" for v in r["per_sigma"].values()) + \
            f" (worst at {r['decisive']})"
        needed = "≥ 0 at every σ"
        versus = "(the named one)"
    else:
        base_cell, strong_cell = "–", "–"
        dec_cell = f"Dec(Enc(x)) {_f(r['psnr'])} dB"
        needed = f"≥ {t.margin:g} dB"
        versus = "–"
    gain = f"{r['gain']:+.2f} [{r['gain'] - r['gain_half']:+.2f}, {r['gain'] + r['gain_half']:+.2f}]" \
        if math.isfinite(r.get("gain_half", math.nan)) else _f(r["gain"], "{:+.2f}")
    if t.kind == "autoencoder":
        gain = f"{r['psnr']:.2f} ± {r['psnr_half']:.2f} dB"
    n = r.get("n", "–")
    return (f"| `{t.prior}` | {text} | {n} | {base_cell} | {dec_cell} | {gain} | {needed} | {verdict} "
            f"| {strong_cell} | {versus} |")


def table(results: dict) -> str:
    lines = ["| prior | target | n | named baseline (PSNR / LPIPS) | decisive solver | gain over the named baseline, dB "
             "[95%] | needed | met | strongest simple method | best solver − strongest, dB [95%] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in TARGETS:
        r = results.get(t.id)
        if r is None:
            lines.append(f"| `{t.prior}` | {t.text} | – | – | – | not measured | – | – | – | – |")
            continue
        lines.append(_table_row(t, r, t.text))
        for k, rk in r.get("by_samples", {}).items():  # the same target judged on the K-sample means
            lines.append(_table_row(t, rk, f"{t.text}, with the mean of {k} samples"))
        for group, rg in r.get("by_symmetry", {}).items():  # the denoiser averaged over a symmetry group
            n_g = len(SYMMETRIES[group])
            lines.append(_table_row(t, rg, f"{t.text}, with the denoiser averaged over its {n_g} {group} "
                                           f"symmetries ({n_g} evaluations, `--equivariant {group}`)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "restore" / "targets")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--only", default="", help="comma-separated target ids (default: all)")
    ap.add_argument("--weights", action="append", default=[], help="NAME=FILE: evaluate this file for prior NAME")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lpips-weights", default=os.environ.get("RESTORE_LPIPS_WEIGHTS")
                    or str(SHARED / "lpips" / "lpips_alex_v0.1.safetensors"))
    ap.add_argument("--samples", default="1", help="K or K,K…: the solver tasks judged on the mean of K posterior "
                    "samples, each K on its own row (default 1: one sample, the solvers' own output)")
    ap.add_argument("--equivariant", default="", help="GROUP[,GROUP]: also judge the denoiser targets with the "
                    "prior averaged over these symmetry groups (flips, dihedral), each on its own row")
    ap.add_argument("--update", default="", help="LABEL[,LABEL]: re-measure only these solvers in the stored bench "
                    "targets (the others' figures kept; the baselines re-run as a check)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of --json and exit")
    args = ap.parse_args(argv)
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    if args.table:
        print(table(results))
        return 0
    args.weights = dict(w.split("=", 1) for w in args.weights)
    args.samples = parse_samples(args.samples)
    args.equivariant = [g for g in args.equivariant.split(",") if g]
    for g in args.equivariant:
        if g not in SYMMETRIES:
            ap.error(f"--equivariant takes {', '.join(SYMMETRIES)}; got '{g}'")
    if args.threads:
        torch.set_num_threads(args.threads)
    ids = [i for i in args.only.split(",") if i] or [t.id for t in TARGETS]
    unknown = set(ids) - {t.id for t in TARGETS}
    if unknown:
        ap.error(f"unknown target {', '.join(sorted(unknown))}; choose from {', '.join(t.id for t in TARGETS)}")
    for t in TARGETS:
        if t.id not in ids:
            continue
        print(f"== {t.id}: {t.text}", flush=True)
        if args.update:
            if t.kind != "bench" or t.id not in results:
                ap.error(f"--update needs stored figures of a solver target; {t.id} has none")
            results[t.id] = update_bench(t, args, results[t.id], args.update.split(","))
        else:
            results[t.id] = measure(t, args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
