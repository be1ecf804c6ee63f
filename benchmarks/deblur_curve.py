"""Quality against compute for a solver target that is out of reach: the ``natural`` Gaussian-deblurring target
(Wiener + 1.5 dB, the priors issue) measured with checkpoints of one training run, and the compute a log-linear
trend projects for it.

Each weight file is one point: its pixels seen and training seconds (``prior_curve.compute_of``: a fine-tune counts
the prior it started from), and DPIR's paired per-image gain over Wiener on the target table's 16 CBSD68 128×128
centre crops (``prior_targets``' ``cbsd68-c128``, made once under ``--work``), the same images, blur, noise and seeds
as the target (``restore.bench.bench``; each weight file's bench folder under ``--work`` resumes). The projection
fits gain = a + b·log₂(pixels seen) to the last ``--fit-last`` points and solves for the margin: b is the gain per
doubling of the training. Gains saturate, so the projection is a lower bound on the compute, and it says nothing
about a larger network.

``--solvers dpir,ddrm,...`` measures more solvers on the same measurements (the first decides the gain and the
projection): each one's mean PSNR, LPIPS and fine detail (``restore.compare.detail_ratio``: the outputs' Laplacian
energy over the clean crops', a geometric mean; 1 = as detailed as the clean image) and the same ratio for colour
(``chroma_ratio``: the Laplacian energy of R − G and B − G, so a grain of colour speckle shows apart from detail in
brightness). That is how a texture trade shows against compute: a denoiser trained longer can raise PSNR and smooth
the outputs. ``--append`` adds points to a JSON already written (a run measured while it trains).

Usage (the curve in docs/priors.md, the `natural` section)::

    OMP_NUM_THREADS=1 python benchmarks/deblur_curve.py --work ~/.cache/restore/curve \\
        --json docs/priors/natural_deblur_curve.json ~/.cache/restore/curve/natural-{500,...,16000}.safetensors \\
        priors/embedded/natural.safetensors
    python benchmarks/deblur_curve.py --json docs/priors/natural_deblur_curve.json --table
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))  # prior_curve, prior_targets
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import priors  # noqa: E402
from prior_curve import compute_of  # noqa: E402
from prior_targets import SHARED, TARGETS, paired, prepared  # noqa: E402
from restore.bench import bench  # noqa: E402
from restore.compare import detail_ratio, laplacian_energy  # noqa: E402
from restore.io import load_image  # noqa: E402


def chroma_ratio(output: str) -> float | None:
    """Fine colour energy of a bench output relative to its clean reference (named in its sidecar): the Laplacian
    energy of R − G plus that of B − G. Above 1 the output has colour speckle the image does not; None for grey
    images or a missing sidecar."""
    def energy(path) -> float | None:
        x = load_image(path).numpy().astype(np.float64)
        if x.shape[0] != 3:
            return None
        return laplacian_energy(x[0] - x[1]) + laplacian_energy(x[2] - x[1])

    try:
        ref = json.loads(Path(output).with_suffix(".json").read_text())["reference"]
        eo, er = energy(output), energy(ref)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if eo is None or not er else eo / er


def geometric_mean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else None


def solver_means(rows: list[dict], solver: str) -> dict:
    """Mean PSNR and LPIPS of one solver's written outputs, and the geometric means of their detail and chroma
    ratios."""
    mine = [r for r in rows if r["solver"] == solver and r.get("status") == "written"]
    lp = [r["lpips"] for r in mine if isinstance(r.get("lpips"), (int, float))]
    return {"psnr": statistics.fmean(r["psnr"] for r in mine), "lpips": statistics.fmean(lp) if lp else None,
            "detail": geometric_mean(detail_ratio(r.get("output", "")) for r in mine),
            "chroma": geometric_mean(chroma_ratio(r.get("output", "")) for r in mine), "n": len(mine)}


def measure(weights: str, work: Path, target, threads: int, lpips: str | None, solvers=("dpir",),
            label: str = "") -> dict:
    card = priors.resolve(weights).card
    images, pixels, seconds = compute_of(card)
    folder = prepared(target.data, work, SHARED)
    label = label or Path(weights).stem
    rows = bench([str(folder)], [target.task], list(solvers), weights, work / f"bench-{label}",
                 noise=str(target.noise), limit=target.limit, baselines=f"{target.baseline},tv", threads=threads,
                 lpips_weights=lpips)
    first = solvers[0]
    gain, over_tv = paired(rows, first, target.baseline, "psnr"), paired(rows, first, "tv", "psnr")
    means = {s: solver_means(rows, s) for s in (*solvers, "tv")}
    return {"label": label, "sha256": card.sha256, "images_seen": images, "pixels_seen": pixels,
            "seconds": seconds, "n": gain["n"], "gain": gain["mean"], "gain_half": gain["half"],
            "over_tv": over_tv["mean"], "over_tv_half": over_tv["half"],
            "psnr": means[first]["psnr"], "lpips": means[first]["lpips"], "solvers": means}


def projection(points: list[dict], margin: float, last: int) -> dict:
    pts = sorted(points, key=lambda p: p["pixels_seen"])[-last:]
    if len({p["pixels_seen"] for p in pts}) < 2:  # no trend to fit
        return {"per_doubling": None, "pixels_needed": None, "points": len(pts), "factor": None}
    b, a = np.polyfit(np.log2([p["pixels_seen"] for p in pts]), [p["gain"] for p in pts], 1)
    need = None if b <= 0 else float(2 ** ((margin - a) / b))
    return {"per_doubling": float(b), "pixels_needed": need, "points": len(pts),
            "factor": None if need is None else need / pts[-1]["pixels_seen"]}


def table(res: dict) -> str:
    first = res.get("solvers", ["dpir"])[0]
    lines = [f"| weights | pixels seen (10⁶) | CPU h | {first} dB | gain over {res.get('baseline', 'wiener')}, "
             "dB [95%] | over TV, dB [95%] | LPIPS |",
             "|---|---|---|---|---|---|---|"]
    for p in sorted(res["points"], key=lambda p: (p["pixels_seen"], p["label"])):
        lines.append(f"| {p['label']} | {p['pixels_seen'] / 1e6:,.0f} | {p['seconds'] / 3600:.2f} | {p['psnr']:.2f} | "
                     f"{p['gain']:+.2f} [{p['gain'] - p['gain_half']:+.2f}, {p['gain'] + p['gain_half']:+.2f}] | "
                     f"{p['over_tv']:+.2f} [{p['over_tv'] - p['over_tv_half']:+.2f}, "
                     f"{p['over_tv'] + p['over_tv_half']:+.2f}] | {p['lpips']:.3f} |")
    pr = res["projection"]
    if pr["per_doubling"] is None:
        lines += ["", "(One training length: no trend to fit.)"]
        return "\n".join(lines + solver_table(res))
    newest = max(res["points"], key=lambda p: p["pixels_seen"])
    if newest["gain"] >= res["margin"]:
        reach = f"the newest point already clears the margin (+{res['margin']} dB)."
    elif pr["pixels_needed"] is None:
        reach = f"the gain is not rising, so no compute reaches the margin (+{res['margin']} dB)."
    else:
        reach = f"the margin (+{res['margin']} dB) at {pr['pixels_needed'] / 1e6:,.0f}·10⁶ pixels seen, " \
                f"{pr['factor']:,.0f}× the newest."
    lines += ["", f"Fitted to the last {pr['points']} points: {pr['per_doubling']:+.3f} dB per doubling of the pixels "
                  f"seen; {reach}"]
    return "\n".join(lines + solver_table(res))


def solver_table(res: dict) -> list[str]:
    """Every measured solver's PSNR / LPIPS / detail / chroma at each point, one column each (none for older JSONs)."""
    lines = []
    names = [s for p in res["points"] for s in p.get("solvers", {})]
    names = list(dict.fromkeys(names))
    if names:  # every solver's PSNR / LPIPS / detail, one column each
        lines += ["", "| weights | " + " | ".join(f"{s}: dB / LPIPS / detail / chroma" for s in names) + " |",
                  "|---|" + "---|" * len(names)]
        for p in sorted(res["points"], key=lambda p: (p["pixels_seen"], p["label"])):
            cells = []
            for s in names:
                m = p.get("solvers", {}).get(s)
                cells.append("" if m is None else f"{m['psnr']:.2f} / " + " / ".join(
                    "–" if m.get(k) is None else f"{m[k]:.3f}" for k in ("lpips", "detail", "chroma")))
            lines.append(f"| {p['label']} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="*", help="weight files of one run (with their .json cards)")
    ap.add_argument("--target", default="natural-deblur", help="a solver target of prior_targets: its task, images, "
                                                                "noise, baseline and margin (DPIR is measured)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "restore" / "curve")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lpips-weights", default=str(SHARED / "lpips" / "lpips_alex_v0.1.safetensors"))
    ap.add_argument("--solvers", default="dpir", help="comma-separated solvers (NAME or NAME:PRESET); the first "
                                                      "decides the gain and the projection")
    ap.add_argument("--append", action="store_true", help="add the points to those already in --json (same target "
                                                           "and solvers), replacing any of the same name")
    ap.add_argument("--fit-last", type=int, default=3)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.json.read_text())))
        return 0
    target = {t.id: t for t in TARGETS}[args.target]
    lpips = args.lpips_weights if Path(args.lpips_weights).is_file() else None
    solvers = tuple(s.strip() for s in args.solvers.split(",") if s.strip())
    points = []
    if args.append and args.json.is_file():
        old = json.loads(args.json.read_text())
        if old.get("target") != target.id or old.get("solvers", ["dpir"]) != list(solvers):
            ap.error(f"{args.json} holds target {old.get('target')} with solvers {old.get('solvers', ['dpir'])}; "
                     "--append needs the same --target and --solvers (or write a new --json)")
        points = old["points"]
    for w in args.weights:
        p = measure(w, args.work, target, args.threads, lpips, solvers, Path(w).stem)
        points = [q for q in points if q["label"] != p["label"]] + [p]
        print(f"{p['label']}: gain {p['gain']:+.3f} dB over {target.baseline}", flush=True)
    res = {"target": target.id, "task": target.task, "noise": target.noise, "baseline": target.baseline,
           "margin": target.margin, "solver": f"{solvers[0]} (its task preset)", "solvers": list(solvers),
           "points": points, "projection": projection(points, target.margin, args.fit_last)}
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
