"""The benchmark report a researcher can use: ``report.html`` (self-contained: images inline, no network) and
``report.tex`` (booktabs tables for a paper), rendered from a bench folder's ``results.json`` alone, so
``restore bench report DIR`` redraws them without running any solver.

report.html holds, per task: the summary (mean and 95% interval per metric, best marked, baselines tagged), the gain
of each solver over the best baseline (paired, with intervals), an image grid with row and column labels and the
metrics under every tile plus a zoomed crop of the most detailed region, a per-image table that sorts by any column,
and Pareto plots of PSNR and LPIPS against seconds per image (SVG, labelled axes with tick values).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
from pathlib import Path

import numpy as np

from .errors import RestoreError

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939"]
METRICS = (("psnr", "PSNR dB", ".2f", max), ("ssim", "SSIM", ".3f", max), ("lpips", "LPIPS", ".3f", min))


def gains(rows: list[dict]) -> dict:
    """{operator: {"psnr"|"lpips": {"best": baseline label, "rows": [...]}}}: per task, the best baseline by mean
    PSNR (and, separately, by mean LPIPS) and each other solver's paired per-image difference from it — mean and 95%
    t-interval over the images both restored; ``zero_in`` where the interval contains 0 (no clear difference).
    Differences are signed so that positive is better (PSNR gain, LPIPS reduction)."""
    from scipy import stats

    out: dict = {}
    written = [r for r in rows if r.get("status") == "written"]
    for op in dict.fromkeys(r["operator"] for r in written):
        mine = [r for r in written if r["operator"] == op]
        per = {}
        for r in mine:
            per.setdefault(r["solver"], {})[r["image"]] = r
        bases = [s for s in per if next(iter(per[s].values())).get("baseline", s == "pinv")]
        out[op] = {}
        for metric, sign in (("psnr", 1.0), ("lpips", -1.0)):
            def mean(solver):
                v = [x[metric] for x in per[solver].values() if _finite(x.get(metric))]
                return statistics.fmean(v) if v else math.nan
            ranked = [b for b in bases if not math.isnan(mean(b))]
            if not ranked:
                continue
            best = max(ranked, key=lambda b: sign * mean(b))
            entries = []
            for solver in per:
                if solver in bases:
                    continue
                common = [im for im in per[solver] if im in per[best] and _finite(per[solver][im].get(metric))
                          and _finite(per[best][im].get(metric))]
                d = [sign * (per[solver][im][metric] - per[best][im][metric]) for im in common]
                if not d:
                    continue
                m = statistics.fmean(d)
                half = (stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
                        if len(d) > 1 else math.inf)
                entries.append(dict(solver=solver, n=len(d), mean=m, lo=m - half, hi=m + half,
                                    zero_in=not (m - half > 0 or m + half < 0)))
            out[op][metric] = {"best": best, "best_mean": mean(best), "rows": entries}
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def load_rows(folder: Path) -> list[dict]:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise RestoreError(f"'{folder}' holds no results.json; give a folder written by 'restore bench' (or merge).")
    try:
        rows = json.loads(path.read_text())
    except ValueError:
        raise RestoreError(f"'{path}' is not valid JSON; rerun 'restore bench' or merge the shards again.") from None
    if not isinstance(rows, list):
        raise RestoreError(f"'{path}' is not a results list written by 'restore bench'.")
    return rows


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n) over the finite values."""
    from scipy import stats

    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    if not v:
        return math.nan, math.nan, 0
    if len(v) == 1:
        return v[0], math.nan, 1
    return statistics.fmean(v), float(stats.t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))), \
        len(v)


def summary(rows: list[dict]) -> dict:
    """{task: {solver: {metric: (mean, half, n), "baseline": bool}}} over written rows, in order of appearance."""
    out: dict = {}
    for r in rows:
        if r.get("status") != "written":
            continue
        out.setdefault(r["operator"], {}).setdefault(r["solver"], []).append(r)
    table: dict = {}
    for op, per in out.items():
        table[op] = {}
        for solver, rs in per.items():
            entry = {m: mean_ci([r.get(m) for r in rs]) for m in ("psnr", "ssim", "lpips", "seconds")}
            entry["baseline"] = bool(rs[0].get("baseline", solver == "pinv"))
            entry["nfe"] = rs[0].get("nfe")
            table[op][solver] = entry
    return table


# ------------------------------------------------------------------------------------------------------------------
# images


def _tile_png(path: "str | Path | None", size: int, box=None) -> str:
    """A data: URI of the image at ``path`` (any input format, as the metrics saw it), optionally cropped to ``box``
    (top, left, h, w), resized to ``size`` pixels wide (nearest neighbour: pixels stay visible)."""
    from PIL import Image

    from .io import load_image, to_uint8

    if path is None or not Path(path).is_file():
        return ""
    img = to_uint8(load_image(path))
    if box is not None:
        t, l, h, w = box
        img = img[t:t + h, l:l + w]
    im = Image.fromarray(img).convert("RGB")
    im = im.resize((size, max(1, round(size * im.height / im.width))), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def detail_box(path: "str | Path", frac: float = 0.35) -> "tuple[int, int, int, int] | None":
    """The square window (a ``frac`` of the shorter side) with the most gradient energy in the ground truth: where
    restorations differ most visibly."""
    from .io import load_image

    if not path or not Path(path).is_file():
        return None
    x = load_image(path).mean(0).numpy()
    h, w = x.shape
    s = max(4, int(min(h, w) * frac))
    gy, gx = np.gradient(x)
    energy = gy**2 + gx**2
    c = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = c[s:, s:] - c[:-s, s:] - c[s:, :-s] + c[:-s, :-s]
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(i), int(j), s, s


def _measurement_preview(output: str, image: str) -> "Path | None":
    """The preview PNG bench saved for an image's measurement: <task>/measurements/<image>.png."""
    out = Path(output)
    depth = len(Path(image).parts)
    task_dir = out.parents[depth] if len(out.parents) > depth else out.parent
    p = task_dir / "measurements" / Path(image).with_suffix(".png")
    return p if p.is_file() else None


def _reference(output: str) -> "str | None":
    side = Path(output).with_suffix(".json")
    try:
        return json.loads(side.read_text()).get("reference")
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------------------------
# plots (SVG)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks


def pareto_svg(points: list[tuple[str, str, float, float]], ylabel: str, lower_better: bool = False,
               width: int = 560, height: int = 360) -> str:
    """An SVG scatter of (solver, task, seconds, value): x = seconds per image (log scale), y = the metric; axes
    with labels and tick values, a legend by solver."""
    pts = [p for p in points if math.isfinite(p[2]) and math.isfinite(p[3]) and p[2] > 0]
    if not pts:
        return ""
    left, right, top, bottom = 64, 150, 16, 48
    xs = [math.log10(p[2]) for p in pts]
    ys = [p[3] for p in pts]
    x0, x1 = min(xs) - 0.15, max(xs) + 0.15
    if x1 - x0 < 1:
        x0, x1 = (x0 + x1) / 2 - 0.5, (x0 + x1) / 2 + 0.5
    mantissas = (1,) if x1 - x0 > 2.5 else (1, 2, 5)  # tick labels that do not overlap
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.05, 0.01)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * ph
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(ylabel)} against seconds per image">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>']
    for e in range(math.floor(x0), math.ceil(x1) + 1):
        for m in mantissas:
            v = math.log10(m) + e
            if x0 - 1e-9 <= v <= x1 + 1e-9:
                label = f"{m * 10.0 ** e:g}"
                parts.append(f'<line x1="{px(v):.1f}" y1="{top + ph}" x2="{px(v):.1f}" y2="{top + ph + 5}" '
                             f'stroke="#333"/><text x="{px(v):.1f}" y="{top + ph + 18}" font-size="11" '
                             f'text-anchor="middle">{label}</text>')
    for t in nice_ticks(y0, y1, 7):
        parts.append(f'<line x1="{left - 5}" y1="{py(t):.1f}" x2="{left}" y2="{py(t):.1f}" stroke="#333"/>'
                     f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 8}" y="{py(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" font-size="12" text-anchor="middle">seconds per image '
                 f'(log scale)</text>')
    better = "lower is better" if lower_better else "higher is better"
    parts.append(f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + ph / 2})">{html.escape(ylabel)} ({better})</text>')
    names = list(dict.fromkeys(p[0] for p in pts))
    for (solver, task, s, v), x in zip(pts, xs):
        c = COLOURS[names.index(solver) % len(COLOURS)]
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="4.5" fill="{c}"><title>{html.escape(solver)} · '
                     f'{html.escape(task)}: {v:.3f} at {s:.3g} s</title></circle>')
    for k, name in enumerate(names):
        c = COLOURS[k % len(COLOURS)]
        y = top + 10 + 16 * k
        parts.append(f'<circle cx="{left + pw + 14}" cy="{y}" r="4.5" fill="{c}"/><text x="{left + pw + 24}" '
                     f'y="{y + 4}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------------------------
# the pages


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3;cursor:pointer}td:first-child,th:first-child{text-align:left}.best{font-weight:bold;
background:#e8f5e9}.base{color:#555;font-style:italic}.ns{color:#999}.grid td{text-align:center;vertical-align:top;
font-size:11px;padding:4px}.grid img{image-rendering:pixelated;display:block;margin:auto}
.grid th{cursor:default}h2{border-bottom:1px solid #ddd;padding-bottom:4px}code{background:#f6f6f6}"""

SORT_JS = """document.querySelectorAll('table.sortable').forEach(function(t){t.querySelectorAll('th').forEach(
function(th,i){th.addEventListener('click',function(){var b=t.tBodies[0],rs=Array.prototype.slice.call(b.rows),
asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';rs.sort(function(a,c){var x=a.cells[i].dataset.v||
a.cells[i].textContent,y=c.cells[i].dataset.v||c.cells[i].textContent,nx=parseFloat(x),ny=parseFloat(y);
var r=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return asc?r:-r;});rs.forEach(function(r){b.appendChild(r);
});});});});"""


def _fmt(v, fmt) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def render_html(folder: Path, rows: list[dict], max_images: int = 4, tile: int = 128) -> str:
    table = summary(rows)
    gain = gains(rows)
    e = html.escape
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>restore bench report</title>",
           f"<style>{CSS}</style></head><body><h1>restore bench report</h1>"]
    written = [r for r in rows if r.get("status") == "written"]
    first = next((r for r in written if not r.get("baseline", r.get("solver") == "pinv")), written[0] if written
                 else {})  # a diffusion solver's row names the prior
    prov = {k: first.get(k) for k in ("noise_sigma", "prior", "prior_sha256", "device", "threads", "lpips_variant")}
    versions = first.get("versions") or {}
    out.append("<p>Mean and 95% interval (t) over the images. PSNR/SSIM on [0, 1] (data range 1); LPIPS lower is "
               "better; seconds per image on this machine. Baselines in <span class='base'>italics</span>; best per "
               "column marked. " + e(", ".join(f"{k}: {v}" for k, v in prov.items() if v is not None))
               + (" · " + e(", ".join(f"{k} {v}" for k, v in versions.items())) if versions else "") + "</p>")
    for op, per in table.items():
        out.append(f"<h2><code>{e(op)}</code></h2>")
        best = {m: pick((v[m][0] for v in per.values() if math.isfinite(v[m][0])), default=math.nan)
                for m, _, _, pick in METRICS}
        out.append("<table class='sortable'><thead><tr><th>solver</th><th>n</th>" + "".join(
            f"<th>{label}</th>" for _, label, _, _ in METRICS) + "<th>s/img</th><th>NFE</th></tr></thead><tbody>")
        for solver, v in per.items():
            cells = []
            for m, _, fmt, _ in METRICS:
                mean, half, _ = v[m]
                text = _fmt(mean, fmt) + ("" if not math.isfinite(half) else f" ± {half:{fmt}}")
                cls = " class='best'" if math.isfinite(mean) and mean == best[m] else ""
                cells.append(f"<td{cls} data-v='{mean}'>{text}</td>")
            name = f"<span class='base'>{e(solver)}</span>" if v["baseline"] else e(solver)
            out.append(f"<tr><td>{name}</td><td>{v['psnr'][2]}</td>{''.join(cells)}"
                       f"<td data-v='{v['seconds'][0]}'>{_fmt(v['seconds'][0], '.3g')}</td>"
                       f"<td>{_fmt(v['nfe'], '')}</td></tr>")
        out.append("</tbody></table>")
        g = gain.get(op, {})
        if any(x["rows"] for x in g.values()):
            p, lp = g.get("psnr"), g.get("lpips")
            out.append(f"<p>Gain over the best baseline (PSNR: <b>{e(p['best']) if p else '–'}</b>; LPIPS: "
                       f"<b>{e(lp['best']) if lp else '–'}</b>), paired per image, mean [95% interval]; positive "
                       f"is better; <span class='ns'>grey: the interval contains 0</span>.</p>")
            out.append("<table class='sortable'><thead><tr><th>solver</th><th>n</th><th>ΔPSNR dB</th>"
                       "<th>ΔLPIPS (reduction)</th></tr></thead><tbody>")
            by: dict = {}
            for metric, x in g.items():
                for r in x["rows"]:
                    by.setdefault(r["solver"], {})[metric] = r
            for solver, v in by.items():
                def cell(r, fmt):
                    if r is None:
                        return "<td>–</td>"
                    cls = " class='ns'" if r["zero_in"] else ""
                    return (f"<td{cls} data-v='{r['mean']}'>{r['mean']:+{fmt}} [{r['lo']:+{fmt}}, "
                            f"{r['hi']:+{fmt}}]</td>")
                n = (v.get("psnr") or v.get("lpips"))["n"]
                out.append(f"<tr><td>{e(solver)}</td><td>{n}</td>{cell(v.get('psnr'), '.2f')}"
                           f"{cell(v.get('lpips'), '.3f')}</tr>")
            out.append("</tbody></table>")
        out.append(_grid_html(op, rows, max_images, tile))
    out.append("<h2>Quality against time</h2><p>One point per task and solver (hover for the values).</p>")
    for metric, label, lower in (("psnr", "PSNR dB", False), ("lpips", "LPIPS", True)):
        pts = [(solver, op, v["seconds"][0], v[metric][0]) for op, per in table.items() for solver, v in per.items()]
        out.append(pareto_svg(pts, label, lower_better=lower))
    out.append("<h2>Every image</h2><p>Click a column header to sort.</p>" + _per_image_table(rows))
    out.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(out)


def _grid_html(op: str, rows: list[dict], max_images: int, tile: int) -> str:
    e = html.escape
    mine = [r for r in rows if r["operator"] == op and r.get("status") == "written"]
    images = list(dict.fromkeys(r["image"] for r in mine))[:max_images]
    solvers = list(dict.fromkeys(r["solver"] for r in mine))
    if not images:
        return ""
    out = ["<table class='grid'><thead><tr><th>image</th><th>ground truth</th><th>measurement</th>"
           + "".join(f"<th>{e(s)}</th>" for s in solvers) + "</tr></thead><tbody>"]
    for image in images:
        by = {r["solver"]: r for r in mine if r["image"] == image}
        any_row = next(iter(by.values()))
        ref = _reference(any_row["output"])
        box = detail_box(ref) if ref else None
        meas = _measurement_preview(any_row["output"], image)
        for zoom in (False, True):
            if zoom and box is None:
                continue
            label = f"{e(image)}<br><small>detail ×{tile / box[2]:.1f}</small>" if zoom else e(image)
            cells = [f"<td>{label}</td>", f"<td><img src='{_tile_png(ref, tile, box if zoom else None)}' "
                                          f"width='{tile}' alt='ground truth'></td>"]
            cells.append(f"<td><img src='{_tile_png(meas, tile)}' width='{tile}' alt='measurement'></td>"
                         if meas is not None and not zoom else "<td></td>")
            for s in solvers:
                r = by.get(s)
                if r is None:
                    cells.append("<td>–</td>")
                    continue
                caption = "" if zoom else (f"<br>{_fmt(r.get('psnr'), '.2f')} dB · LPIPS "
                                           f"{_fmt(r.get('lpips'), '.3f')}")
                cells.append(f"<td><img src='{_tile_png(r['output'], tile, box if zoom else None)}' "
                             f"width='{tile}' alt='{e(s)}'>{caption}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _per_image_table(rows: list[dict]) -> str:
    e = html.escape
    cols = [("operator", ""), ("image", ""), ("solver", ""), ("psnr", ".2f"), ("ssim", ".3f"), ("lpips", ".3f"),
            ("rel_l2", ".4f"), ("misfit", ".4f"), ("noise_level", ".4f"), ("seconds", ".3g"), ("nfe", "")]
    out = ["<table class='sortable'><thead><tr>" + "".join(f"<th>{c}</th>" for c, _ in cols)
           + "</tr></thead><tbody>"]
    for r in rows:
        if r.get("status") != "written":
            continue
        cells = []
        for c, fmt in cols:
            v = r.get(c)
            text = e(str(v).split(",")[0] if c == "operator" else str(v)) if not fmt else _fmt(v, fmt)
            cells.append(f"<td data-v='{v if fmt else e(str(v))}'>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def render_tex(rows: list[dict]) -> str:
    """The summary as booktabs tables, one per task (\\usepackage{booktabs})."""
    table = summary(rows)

    def tex(s: str) -> str:
        return "".join("\\" + c if c in "_&%$#{}" else c for c in s)
    out = ["% restore bench summary: mean ± 95% interval over the images; best per column in bold.",
           "% \\usepackage{booktabs}"]
    for op, per in table.items():
        best = {m: pick((v[m][0] for v in per.values() if math.isfinite(v[m][0])), default=math.nan)
                for m, _, _, pick in METRICS}
        out += ["\\begin{table}[t]", "\\centering", f"\\caption{{\\texttt{{{tex(op)}}}}}",
                "\\begin{tabular}{lrrrrr}", "\\toprule",
                "Method & $n$ & PSNR (dB) $\\uparrow$ & SSIM $\\uparrow$ & LPIPS $\\downarrow$ & s/img \\\\",
                "\\midrule"]
        for solver, v in per.items():
            cells = []
            for m, _, fmt, _ in METRICS:
                mean, half, _ = v[m]
                text = "--" if not math.isfinite(mean) else (f"{mean:{fmt}}" + (f" $\\pm$ {half:{fmt}}"
                                                                                  if math.isfinite(half) else ""))
                cells.append(f"\\textbf{{{text}}}" if math.isfinite(mean) and mean == best[m] else text)
            name = tex(solver) + (" (baseline)" if v["baseline"] else "")
            out.append(f"{name} & {v['psnr'][2]} & " + " & ".join(cells) + f" & {_fmt(v['seconds'][0], '.3g')} \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def write_reports(folder: Path, rows: "list[dict] | None" = None) -> tuple[Path, Path]:
    """report.html and report.tex in ``folder`` (from its results.json unless ``rows`` are given)."""
    from .io import atomic_path

    folder = Path(folder)
    rows = load_rows(folder) if rows is None else rows
    paths = folder / "report.html", folder / "report.tex"
    for path, text in zip(paths, (render_html(folder, rows), render_tex(rows))):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return paths
