"""restore bench: evenly spread --limit, solver labels with presets, provenance columns, and the gain over the best
baseline with paired 95% intervals (checked against scipy's paired t-test)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from restore.bench import gains, spread
from restore.cli import main
from restore.io import save_image

pytestmark = pytest.mark.usefixtures("one_thread")


def test_limit_spreads_evenly_over_the_folder():
    files = list(range(10))
    assert spread(files, 0) == files and spread(files, 20) == files
    assert spread(files, 1) == [0] and spread(files, 2) == [0, 5] and spread(files, 4) == [0, 2, 5, 7]
    assert spread(list(range(300)), 16)[:3] == [0, 18, 37]  # the 16 test faces of docs/benchmarks.md


def _rows(values: dict, metric="psnr", baselines=("pinv", "tv")):
    rows = []
    for solver, per_image in values.items():
        for k, v in enumerate(per_image):
            rows.append(dict(image=f"im{k}", operator="op", solver=solver, status="written", baseline=solver in
                             baselines, psnr=v if metric == "psnr" else 20.0, lpips=v if metric == "lpips" else 0.2))
    return rows


def test_gain_over_the_best_baseline_is_a_paired_t_interval():
    rng = np.random.default_rng(0)
    tv = 25 + rng.normal(0, 1, 12)
    values = {"pinv": 20 + rng.normal(0, 1, 12), "tv": tv, "ddnm": tv + 0.8 + rng.normal(0, 0.3, 12),
              "dps": tv + rng.normal(0, 1, 12) * 0.1}
    g = gains(_rows(values))["op"]["psnr"]
    assert g["best"] == "tv" and math.isclose(g["best_mean"], float(np.mean(tv)))
    by = {e["solver"]: e for e in g["rows"]}
    d = values["ddnm"] - tv
    test = stats.ttest_rel(values["ddnm"], tv)
    ci = test.confidence_interval(0.95)
    assert math.isclose(by["ddnm"]["mean"], float(d.mean()), rel_tol=1e-9)
    assert math.isclose(by["ddnm"]["lo"], ci.low, rel_tol=1e-9) and math.isclose(by["ddnm"]["hi"], ci.high,
                                                                                  rel_tol=1e-9)
    assert not by["ddnm"]["zero_in"]
    assert by["dps"]["lo"] < 0 < by["dps"]["hi"] and by["dps"]["zero_in"]
    # LPIPS: lower is better, so the best baseline is the lowest and the gain is the reduction
    lp = {"pinv": np.full(5, 0.5), "tv": np.full(5, 0.3) + np.arange(5) * 0.01, "ddnm": np.full(5, 0.2)}
    g = gains(_rows(lp, metric="lpips"))["op"]["lpips"]
    assert g["best"] == "tv" and g["rows"][0]["mean"] > 0


def test_bench_solver_presets_provenance_and_gain_table(tmp_path, capsys):
    folder = tmp_path / "clean"
    g = torch.Generator().manual_seed(0)
    for k in range(3):
        save_image(folder / f"im{k}.png", torch.rand(3, 16, 16, generator=g))
    code = main(["bench", str(folder), "-o", "denoise", "--noise", "0.05", "--solver", "pinv", "--baselines", "none",
                 "--limit", "2", "--out", str(tmp_path / "b"), "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    assert sorted(r["image"] for r in rows) == ["im0.png", "im1.png"]  # spread: positions 0 and 3//2
    r = rows[0]
    for key in ("seed", "noise_sigma", "prior", "params", "lpips_variant", "device", "threads", "versions",
                "misfit", "noise_level", "rel_l2"):
        assert key in r, key
    assert r["threads"] == 1 and r["noise_sigma"] == 0.05 and r["versions"]["torch"] == torch.__version__
    # pinv on denoise returns y clamped to [0, 1]: it fits the data more closely than the noise does
    assert 0 < r["misfit"] < r["noise_level"] and 0.05 < r["noise_level"] < 0.5
    # an unknown preset in a label is refused before any work
    code = main(["bench", str(folder), "-o", "denoise", "--solver", "ddnm:nonsense", "--out", str(tmp_path / "c")])
    assert code == 2 and "no preset 'nonsense'" in capsys.readouterr().err


def test_rows_name_their_own_images_when_sizes_group_and_runs_resume(tmp_path, capsys):
    """Images of two sizes are solved in two groups, and a resumed run reads finished images back before solving the
    rest: each row must still carry its own image's name and metrics (a reordering once paired the wrong images)."""
    folder = tmp_path / "clean"
    g = torch.Generator().manual_seed(2)
    for k, side in enumerate((16, 24, 16, 24)):
        save_image(folder / f"im{k}.png", torch.rand(3, side, side, generator=g))
    args = ["bench", str(folder), "-o", "denoise", "--noise", "0.1", "--solver", "pinv", "--baselines", "nlm",
            "--out", str(tmp_path / "b"), "--threads", "1"]
    assert main(args) == 0, capsys.readouterr().err
    (tmp_path / "b" / "op0" / "nlm" / "im0.png").unlink()  # im0 is solved again, after the three read back
    assert main(args) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["image"] for r in rows if r["solver"] == "nlm"] == ["im0.png", "im1.png", "im2.png", "im3.png"]
    for r in rows:
        side = json.loads((tmp_path / "b" / "op0" / r["solver"] / r["image"]).with_suffix(".json").read_text())
        assert Path(side["input"]).name == r["image"] and side["metrics"]["psnr"] == r["psnr"], r


def _bench_folder(tmp_path, capsys):
    folder = tmp_path / "clean"
    g = torch.Generator().manual_seed(1)
    for k in range(3):
        save_image(folder / f"im{k}.png", torch.rand(3, 24, 24, generator=g))
    code = main(["bench", str(folder), "-o", "sr2;inpaint-random", "--noise", "0.02", "--solver", "ddnm",
                 "--prior", "natural", "--steps", "2", "--out", str(tmp_path / "b"), "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    return tmp_path / "b"


def test_html_and_tex_reports_render_from_saved_results(tmp_path, capsys):
    from html.parser import HTMLParser

    out = _bench_folder(tmp_path, capsys)
    page = (out / "report.html").read_text()
    tex = (out / "report.tex").read_text()

    class Count(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.srcs, self.texts = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.srcs += [v for k, v in attrs if k == "src"]

        def handle_data(self, data):
            self.texts.append(data)
    c = Count()
    c.feed(page)
    assert c.tags.count("svg") >= 1 and "script" in c.tags  # PSNR (and LPIPS where its weights are here)
    assert c.srcs and all(s.startswith("data:image/png;base64,") for s in c.srcs)  # self-contained: images inline
    text = " ".join(c.texts)
    assert "seconds per image (log scale)" in text and "PSNR dB (higher is better)" in text
    assert "ground truth" in text and "measurement" in text and "detail ×" in text and "Gain over the best" in text
    assert "\\toprule" in tex and "\\bottomrule" in tex and "(baseline)" in tex
    # redrawn from results.json alone, after the reports are removed
    for name in ("report.html", "report.tex", "report.md"):
        (out / name).unlink()
    assert main(["bench", "report", str(out)]) == 0
    assert (out / "report.html").read_text() == page and (out / "report.tex").read_text() == tex
    assert main(["bench", "report", str(tmp_path / "nowhere")]) == 2


def test_nice_ticks_and_detail_box(tmp_path):
    from restore.report import detail_box, nice_ticks

    assert nice_ticks(20.3, 27.9) == [22.0, 24.0, 26.0] or nice_ticks(20.3, 27.9) == [20.5, 22.5, 25.0, 27.5] \
        or all(20.3 <= t <= 27.9 for t in nice_ticks(20.3, 27.9))
    ticks = nice_ticks(0.1, 0.45)
    assert ticks[0] >= 0.1 and ticks[-1] <= 0.45 and len(ticks) >= 3
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    img = torch.zeros(3, 40, 40)
    img[:, 25:35, 5:15] = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(0))  # the only detail
    save_image(tmp_path / "d.png", img)
    t, l, h, w = detail_box(tmp_path / "d.png")
    assert t <= 25 < 35 <= t + h + 1 and l <= 5 + 1 and 15 <= l + w + 1


def test_report_html_renders_in_headless_chromium_without_console_errors(tmp_path, capsys):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium (Debian's chromium package) is not installed")
    out = _bench_folder(tmp_path, capsys)
    shot = tmp_path / "shot.png"
    # a script error on the page is logged as a console message; sorting must also run without one
    page = (out / "report.html").read_text().replace(
        "</body>", "<script>document.querySelector('table.sortable th').click();"
                   "console.log('RESTORE-PAGE-OK');</script></body>")
    (out / "checked.html").write_text(page)
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--window-size=1200,1600",
                           f"--screenshot={shot}", (out / "checked.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    log = done.stderr
    assert shot.is_file() and shot.stat().st_size > 20_000, log[-2000:]
    consoles = [line for line in log.splitlines() if "CONSOLE" in line]
    assert any("RESTORE-PAGE-OK" in line for line in consoles), log[-2000:]  # the page ran to its end
    assert not [line for line in consoles if "Uncaught" in line or "Error" in line], consoles
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert im.std() > 20  # not a blank page: tables, images and plots are drawn


def test_data_fit_per_image_with_per_image_masks():
    import operators
    from operators import Noise
    from restore.solve import data_fit

    op = operators.build("mask:kind=random,fraction=0.5", (3, 16, 16), seeds=[0, 1])
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = operators.measure(op, x, 0.05, [0, 1])
    fits = data_fit(op, x, y, Noise.parse("0.05"))
    for i in range(2):
        r = (op.mask[i:i + 1] * x[i:i + 1]) - y[i:i + 1]
        assert math.isclose(fits[i]["misfit"], float(r.norm() / y[i:i + 1].norm()), rel_tol=1e-5)
        m = float(op.mask[i].expand(3, 16, 16).sum())
        assert math.isclose(fits[i]["noise_level"], 0.05 * math.sqrt(m) / float(y[i:i + 1].norm()), rel_tol=1e-5)
        # the true image fits the data to about the noise level
        assert 0.7 < fits[i]["misfit"] / fits[i]["noise_level"] < 1.3


def test_a_refused_solver_task_is_said_and_the_bench_goes_on(tmp_path, capsys):
    folder = tmp_path / "clean"
    save_image(folder / "im0.png", torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))
    code = main(["bench", str(folder), "-o", "blur:kind=motion,size=5;denoise", "--noise", "0.02", "--solver", "ddnm",
                 "--prior", "natural", "--steps", "2", "--baselines", "none", "--out", str(tmp_path / "b")])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    status = {(r["operator"].split(",")[0], r["solver"]): r["status"] for r in rows}
    assert status[("blur:kind=motion", "ddnm")] == "refused" and status[("denoise", "ddnm")] == "written"
    assert "Refused" in (tmp_path / "b" / "report.md").read_text()
