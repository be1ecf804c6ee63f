"""The markdown tables of docs/benchmarks.md ("Against the classical baselines") from a ``restore bench`` folder.

Per task: mean ± the half-width of the 95% t-interval over the images (baselines in italics, best per column in
bold), then each solver's paired gain over the best baseline (``restore.bench.gains``). Prints to stdout::

    python benchmarks/docs_tables.py ~/.cache/restore/bench2/faces "faces64, 8 test faces"
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import operators  # noqa: E402
from restore.bench import gains  # noqa: E402
from restore.report import load_rows, summary  # noqa: E402
from restore.solve import task_label  # noqa: E402

METRICS = (("psnr", "{:.2f}", 1), ("ssim", "{:.3f}", 1), ("lpips", "{:.3f}", -1))


def cell(mean: float, half: float, fmt: str) -> str:
    if math.isnan(mean):
        return "–"
    return fmt.format(mean) + ("" if math.isnan(half) else " ± " + fmt.format(half))


def tables(folder: Path, title: str) -> str:
    rows = load_rows(folder)
    table, gain = summary(rows), gains(rows)
    out = []
    for op, per in table.items():
        label = task_label(op)
        if label == "mri":  # both rates share the task name
            label = f"mri-{operators.parse(op)['accel']}x"
        out += [f"#### {title}: {label}", "", "| method | n | PSNR ↑ | SSIM ↑ | LPIPS ↓ | s/img |",
                "|---|---|---|---|---|---|"]
        best = {m: max((sign * e[m][0] for e in per.values() if not math.isnan(e[m][0])), default=math.nan)
                for m, _, sign in METRICS}
        for solver, e in per.items():
            name = f"*{solver}* (baseline)" if e["baseline"] else solver
            cells = []
            for m, fmt, sign in METRICS:
                text = cell(e[m][0], e[m][1], fmt)
                cells.append(f"**{text}**" if sign * e[m][0] == best[m] else text)
            out.append(f"| {name} | {e['psnr'][2]} | " + " | ".join(cells) + f" | {e['seconds'][0]:.3g} |")
        g = gain.get(op, {})
        if g.get("psnr"):
            out += ["", f"Gain over the best baseline (PSNR: *{g['psnr']['best']}*; LPIPS: "
                        f"*{g.get('lpips', {}).get('best', '–')}*), paired, mean [95% interval], positive = better:",
                    "", "| solver | ΔPSNR dB | ΔLPIPS (reduction) |", "|---|---|---|"]
            lp = {r["solver"]: r for r in g.get("lpips", {}).get("rows", [])}

            def fmt_gain(r, digits):
                if r is None:
                    return "–"
                text = f"{r['mean']:+.{digits}f} [{r['lo']:+.{digits}f}, {r['hi']:+.{digits}f}]"
                return text + (" *n.s.*" if r["zero_in"] else "")

            for r in g["psnr"]["rows"]:
                out.append(f"| {r['solver']} | {fmt_gain(r, 2)} | {fmt_gain(lp.get(r['solver']), 3)} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(Path(sys.argv[1]).expanduser(), sys.argv[2] if len(sys.argv) > 2 else Path(sys.argv[1]).name))
