"""Two bench runs of the same images side by side: ``restore bench compare A B``.

What changes when one thing changes (the prior's weights, a preset, a version of the code): for every task and
solver label that both runs hold, the paired per-image difference B − A of PSNR, SSIM and LPIPS, each as the mean
with its 95% t-interval, and the fine detail of the outputs. Detail is the energy of an output's discrete Laplacian
(on its grey mean) divided by the clean reference's, as a geometric mean over the images: 1 is as much fine detail as
the clean image, a posterior-mean-like estimate is far below 1, and a PSNR gain that comes with less detail is a
smoother output, which LPIPS usually sees as a loss. PSNR and LPIPS often disagree, so both are given.

Pairs must share the image, the seed and the noise level, so that both runs restored the same measurement (a bench
folder draws its noise from a per-image seed); runs that do not are refused with one sentence.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np

from .errors import RestoreError
from .report import load_rows, mean_ci

METRICS = ("psnr", "ssim", "lpips")


def laplacian_energy(img: np.ndarray) -> float:
    """Mean squared 5-point Laplacian (reflected edges) of an image's grey mean; img is (C, H, W) or (H, W)."""
    g = np.asarray(img, dtype=np.float64)
    if g.ndim == 3:
        g = g.mean(axis=0)
    p = np.pad(g, 1, mode="reflect")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * g
    return float(np.mean(lap ** 2))


@functools.lru_cache(maxsize=4096)
def _energy_and_shape(path: str) -> tuple[float, tuple]:
    """Laplacian energy and (H, W) of an image file; cached: both runs of a comparison name the same references."""
    from .io import load_image

    x = load_image(path).numpy()
    return laplacian_energy(x), x.shape[-2:]


def detail_ratio(output: "str | Path") -> "float | None":
    """Laplacian energy of a bench output relative to its clean reference (named in the output's sidecar), or None
    when the sidecar, the reference or a matching size is missing."""
    out = Path(output)
    try:
        ref = json.loads(out.with_suffix(".json").read_text()).get("reference")
        ex, shape_x = _energy_and_shape(str(out))
        er, shape_r = _energy_and_shape(str(ref))
    except (OSError, ValueError, TypeError, RestoreError):
        return None
    if shape_x != shape_r or er <= 0:
        return None
    return ex / er


def _key_rows(rows: list[dict]) -> dict:
    return {(r["operator"], r["solver"], r["image"]): r for r in rows if r.get("status") == "written"}


def compare_rows(rows_a: list[dict], rows_b: list[dict], detail: bool = True) -> list[dict]:
    """One entry per (task, solver label) found in both runs: n, the means of A and B and the paired difference B − A
    (mean, half-width of the 95% interval) of each metric, and the detail ratio of A and B (geometric means)."""
    a, b = _key_rows(rows_a), _key_rows(rows_b)
    shared = [k for k in b if k in a]
    if not shared:
        raise RestoreError("the two runs share no task, solver and image; compare two bench folders made on the "
                           "same images with the same --operator and solvers.")
    for k in shared:
        for field in ("seed", "noise_sigma"):
            if a[k].get(field) != b[k].get(field):
                raise RestoreError(f"{k[2]} ({k[1]}) was measured with {field} {a[k].get(field)} in one run and "
                                   f"{b[k].get(field)} in the other; compare runs made with the same --seed and "
                                   "--noise.")
    groups: dict = {}
    for k in shared:
        groups.setdefault((k[0], k[1]), []).append(k)
    out = []
    for (op, solver), keys in groups.items():
        entry = {"operator": op, "solver": solver, "n": len(keys), "baseline": bool(b[keys[0]].get("baseline"))}
        for m in METRICS:
            pairs = [(a[k].get(m), b[k].get(m)) for k in keys]
            pairs = [(x, y) for x, y in pairs if isinstance(x, (int, float)) and isinstance(y, (int, float))
                     and math.isfinite(x) and math.isfinite(y)]
            entry[m] = {"a": mean_ci([x for x, _ in pairs])[0], "b": mean_ci([y for _, y in pairs])[0],
                        "diff": mean_ci([y - x for x, y in pairs])[:2], "n": len(pairs)}
        if detail:
            for side, rows in (("a", a), ("b", b)):
                ratios = [detail_ratio(rows[k].get("output", "")) for k in keys]
                ratios = [v for v in ratios if v is not None and v > 0]
                entry[f"detail_{side}"] = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
        out.append(entry)
    return out


def _num(v, fmt: str) -> str:
    return f"{v:{fmt}}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _diff(d: dict, fmt: str) -> str:
    mean, half = d["diff"]
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(half):
        return f"{mean:+{fmt}}"
    return f"{mean:+{fmt}} [{mean - half:+{fmt}}, {mean + half:+{fmt}}]"


def compare_markdown(entries: list[dict], name_a: str = "A", name_b: str = "B") -> str:
    """Markdown tables, one per task: each solver's A and B means and the paired differences B − A."""
    lines = []
    for op in dict.fromkeys(e["operator"] for e in entries):
        lines += [f"## `{op}`", "", f"A = {name_a}, B = {name_b}; paired per image, B − A, mean [95% interval]; "
                  "LPIPS: lower is better; detail: fine-detail energy relative to the clean image (1 = as detailed).",
                  "", "| solver | n | PSNR A → B | ΔPSNR dB | ΔSSIM | LPIPS A → B | ΔLPIPS | detail A → B |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in (e for e in entries if e["operator"] == op):
            det = ("–" if e.get("detail_a") is None or e.get("detail_b") is None
                   else f"{e['detail_a']:.3f} → {e['detail_b']:.3f}")
            label = e["solver"] + (" (baseline)" if e["baseline"] else "")
            lines.append(f"| {label} | {e['n']} | {_num(e['psnr']['a'], '.2f')} → {_num(e['psnr']['b'], '.2f')} | "
                         f"{_diff(e['psnr'], '.2f')} | {_diff(e['ssim'], '.3f')} | {_num(e['lpips']['a'], '.3f')} → "
                         f"{_num(e['lpips']['b'], '.3f')} | {_diff(e['lpips'], '.3f')} | {det} |")
        lines.append("")
    return "\n".join(lines)


def compare_folders(folder_a: "str | Path", folder_b: "str | Path", detail: bool = True) -> tuple[list[dict], str]:
    entries = compare_rows(load_rows(Path(folder_a)), load_rows(Path(folder_b)), detail=detail)
    return entries, compare_markdown(entries, str(folder_a), str(folder_b))
