"""restore bench compare: paired per-image differences between two bench runs (checked against scipy's paired
t-test), the fine-detail measure (against scipy's Laplacian), and the refusals of runs that did not restore the same
measurements."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from restore.cli import main
from restore.compare import compare_rows, laplacian_energy
from restore.errors import RestoreError
from restore.io import save_image

pytestmark = pytest.mark.usefixtures("one_thread")


def test_laplacian_energy_is_scipys_laplacian_on_the_grey_mean():
    rng = np.random.default_rng(0)
    img = rng.random((3, 20, 17))
    grey = img.mean(axis=0)
    assert math.isclose(laplacian_energy(img), float(np.mean(ndimage.laplace(grey, mode="mirror") ** 2)),
                        rel_tol=1e-12)
    assert laplacian_energy(np.ones((3, 8, 8))) == 0.0
    # smoothing removes fine detail
    assert laplacian_energy(ndimage.gaussian_filter(grey, 1.5)) < 0.1 * laplacian_energy(grey)


def _rows(values: dict, seed_of=lambda k: k):
    return [dict(image=f"im{k}.png", operator="op", solver=solver, status="written", baseline=False, seed=seed_of(k),
                 noise_sigma=0.05, psnr=float(v), ssim=0.5, lpips=0.3 - 0.01 * float(v) / 30)
            for solver, per_image in values.items() for k, v in enumerate(per_image)]


def test_compare_rows_is_a_paired_t_interval_over_the_shared_rows():
    rng = np.random.default_rng(1)
    a = 24 + rng.normal(0, 1.5, 10)
    b = a + 0.4 + rng.normal(0, 0.2, 10)
    rows_a = _rows({"ddnm": a, "only-in-a": a})
    rows_b = _rows({"ddnm": b, "only-in-b": b})
    (e,) = compare_rows(rows_a, rows_b, detail=False)
    assert e["solver"] == "ddnm" and e["n"] == 10
    ci = stats.ttest_rel(b, a).confidence_interval(0.95)
    mean, half = e["psnr"]["diff"]
    assert math.isclose(mean, float(np.mean(b - a)), rel_tol=1e-9)
    assert math.isclose(mean - half, ci.low, rel_tol=1e-9) and math.isclose(mean + half, ci.high, rel_tol=1e-9)
    assert math.isclose(e["psnr"]["a"], float(np.mean(a))) and math.isclose(e["psnr"]["b"], float(np.mean(b)))
    assert e["ssim"]["diff"][0] == 0.0 and e["lpips"]["diff"][0] < 0
    # a failed image in one run is left out of the pairs
    rows_b[3]["status"] = "failed"
    assert compare_rows(rows_a, rows_b, detail=False)[0]["n"] == 9
    # other noise draws cannot be paired; nothing shared is refused
    with pytest.raises(RestoreError, match="same --seed"):
        compare_rows(rows_a, _rows({"ddnm": b}, seed_of=lambda k: k + 1), detail=False)
    with pytest.raises(RestoreError, match="share no task"):
        compare_rows(rows_a, _rows({"dps": b}), detail=False)


def test_bench_compare_on_two_runs(tmp_path, capsys):
    folder = tmp_path / "clean"
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 24)
    for k in range(3):  # smooth images, so that the noise adds fine detail and a denoiser takes it away
        save_image(folder / f"im{k}.png", (0.5 + 0.4 * torch.sin(6 * x[None, :] + k) * torch.cos(4 * x[:, None])
                                           + 0.02 * torch.rand(3, 24, 24, generator=g)).clamp(0, 1))
    base = ["bench", str(folder), "-o", "denoise", "--noise", "0.1", "--solver", "pinv", "--threads", "1"]
    assert main(base + ["--baselines", "none", "--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert main(base + ["--baselines", "nlm", "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("| pinv"))
    # the same measurements and the same solver: no difference at all, and the noisy output is more detailed
    # than the clean image
    cells = [c.strip() for c in line.split("|")]
    assert cells[2] == "3" and cells[4] == "+0.00 [+0.00, +0.00]"
    det_a, det_b = (float(v) for v in cells[8].split(" → "))
    assert det_a == det_b > 1
    assert "nlm" not in out  # only in one run
    # B's results edited: the paired difference is the edit
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    for r in rows:
        r["psnr"] += 1.0
    (tmp_path / "b" / "results.json").write_text(json.dumps(rows))
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "| +1.00 [+1.00, +1.00] |" in capsys.readouterr().out
    # another seed: other noise, refused in one sentence; a missing folder or argument likewise
    assert main(base + ["--baselines", "none", "--seed", "3", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "same --seed" in capsys.readouterr().err
    assert main(["bench", "compare", str(tmp_path / "a")]) == 2
    assert "two bench folders" in capsys.readouterr().err
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2
