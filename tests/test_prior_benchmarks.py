"""The prior benchmark scripts: ``benchmarks/prior_targets.py`` (the target table of the priors issue: verdicts
from paired per-image gains, checked against scipy's paired t-test; the prepared test crops; the denoiser target at
toy scale), ``benchmarks/train_recipes.py`` (candidates compared at the same evaluation point; the 32² crop
candidate runs 4× the steps for the same pixels seen), ``prior_curve.py``, ``autoencoder_curve.py`` and
``deblur_curve.py`` (their log-linear projections; the autoencoder curve's chunks at toy scale; the deblurring
curve's per-solver detail and colour detail against scipy's Laplacian)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from restore.io import load_image, save_image

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pt():
    return _module("prior_targets")


@pytest.fixture(scope="module")
def tr():
    return _module("train_recipes")


def _rows(values: dict, baselines=("pinv", "bicubic", "tv"), lpips=None):
    rows = []
    for solver, per_image in values.items():
        for k, v in enumerate(per_image):
            rows.append(dict(image=f"im{k}.png", operator="sr", solver=solver, status="written",
                             baseline=solver in baselines, psnr=float(v),
                             lpips=float(lpips[solver][k]) if lpips else 0.2))
    return rows


def test_verdict_is_the_paired_gain_of_the_best_or_the_worst_solver(pt):
    rng = np.random.default_rng(0)
    bicubic = 25 + rng.normal(0, 1, 10)
    values = {"pinv": bicubic - 1, "bicubic": bicubic, "tv": bicubic + 0.3,
              "a": bicubic + 1.6 + rng.normal(0, 0.2, 10), "b": bicubic + 0.4 + rng.normal(0, 0.2, 10)}
    rows = _rows(values)
    best = pt.Target("t", "p", "text", "d", "sr4", solvers=("a", "b"), baseline="bicubic", margin=1.5)
    r = pt.verdict(best, rows)
    ci = stats.ttest_rel(values["a"], bicubic).confidence_interval(0.95)
    assert r["decisive"] == "a" and math.isclose(r["gain"], float(np.mean(values["a"] - bicubic)), rel_tol=1e-9)
    assert math.isclose(r["gain"] - r["gain_half"], ci.low, rel_tol=1e-9) and r["n"] == 10
    assert r["met"] and r["strongest_baseline"] == "tv"  # tv beats the named bicubic: it is reported beside it
    over = r["gains"]["a"]["over_strongest"]
    assert math.isclose(over["mean"], float(np.mean(values["a"] - values["tv"])), rel_tol=1e-9)
    every = pt.Target("t", "p", "text", "d", "sr4", solvers=("a", "b"), baseline="bicubic", margin=1.5, rule="every")
    r = pt.verdict(every, rows)
    assert r["decisive"] == "b" and not r["met"] and not r["sure"]
    # a refused solver is listed, not counted
    r = pt.verdict(pt.Target("t", "p", "x", "d", "sr4", solvers=("a", "gone"), baseline="bicubic"), rows)
    assert r["refused"] == ["gone"] and r["decisive"] == "a"
    table = pt.table({"faces64-sr4": pt.verdict(pt.TARGETS[3], _rows({**values, "ddnm:low-start": values["a"],
                                                                       "ddrm:low-start": values["b"]}))})
    line = next(row for row in table.splitlines() if "SR×4 best solver" in row)
    assert "ddnm:low-start" in line and "| yes" in line and "tv " in line


def test_a_k_sample_mean_is_judged_on_its_own_row(pt):
    """``--samples 1,4``: bench labels the 4-sample means 'ddnm (mean of 4)'; the verdict for K = 4 judges those
    rows (and the same deterministic baselines), the table gives each K its own line."""
    rng = np.random.default_rng(1)
    bicubic = 25 + rng.normal(0, 1, 12)
    one, four = bicubic + 0.9 + rng.normal(0, 0.2, 12), bicubic + 1.7 + rng.normal(0, 0.2, 12)
    rows = _rows({"pinv": bicubic - 1, "bicubic": bicubic, "tv": bicubic + 0.2, "ddnm:low-start": one,
                  "ddnm:low-start (mean of 4)": four, "ddrm:low-start": one - 0.1,
                  "ddrm:low-start (mean of 4)": four - 0.1})
    t = pt.TARGETS[3]
    assert pt.sample_label("ddnm:low-start", 4, "mean") == "ddnm:low-start (mean of 4)"  # bench's own label
    r1, r4 = pt.verdict(t, rows), pt.verdict(t, rows, 4)
    assert r1["decisive"] == "ddnm:low-start" and not r1["met"] and r1["samples"] == 1
    assert r4["decisive"] == "ddnm:low-start (mean of 4)" and r4["met"] and r4["samples"] == 4
    assert math.isclose(r4["gain"], float(np.mean(four - bicubic)), rel_tol=1e-9)
    assert r4["strongest_baseline"] == "tv" and set(r4["gains"]) == {"ddnm:low-start (mean of 4)",
                                                                    "ddrm:low-start (mean of 4)"}
    # a deterministic solver (dpir) runs once whatever K: the K = 4 row judges its one output beside the means
    rows += _rows({"dpir": bicubic + 1.8})
    r4 = pt.verdict(t, rows, 4)
    assert r4["decisive"] == "dpir" and "dpir (mean of 4)" not in r4["refused"]
    assert math.isclose(r4["gains"]["dpir"]["psnr"]["mean"], 1.8, rel_tol=1e-9)
    r4 = pt.verdict(t, [r for r in rows if r["solver"] != "dpir"], 4)
    lines = [row for row in pt.table({"faces64-sr4": r1 | {"by_samples": {"4": r4}}}).splitlines()
             if "SR×4 best solver" in row]
    assert len(lines) == 2 and "| no |" in lines[0]
    assert "with the mean of 4 samples" in lines[1] and "(mean of 4)" in lines[1] and "| **yes** |" in lines[1]


def test_update_remeasures_one_solver_and_recomputes_the_verdict(pt, tmp_path, monkeypatch):
    """``--update dpir``: only dpir (and the baselines, as a check) runs again; its figures replace the stored ones,
    the other solvers' stay, and the decisive solver of an "every" target is chosen again over all of them."""
    import types

    rng = np.random.default_rng(2)
    zf = 21 + rng.normal(0, 1, 6)
    base = {"pinv": zf, "zerofill": zf, "tv": zf + 0.9}
    a, b = zf + 2.0 + rng.normal(0, 0.1, 6), zf + 1.4 + rng.normal(0, 0.1, 6)
    t = pt.Target("t", "p", "x", "d", "mri-8x", solvers=("a", "b", "dpir"), baseline="zerofill", margin=1.0,
                  rule="every")
    baselines = ("pinv", "zerofill", "tv")
    stored = pt.verdict(t, _rows({**base, "a": a, "b": b, "dpir": zf + 0.8}, baselines)) | {"prior_sha256": "abc"}
    assert stored["decisive"] == "dpir" and not stored["met"]
    calls = []

    def fake_bench(images, specs, solvers, prior, out, **kw):
        calls.append(solvers)
        return _rows({**base, "dpir": zf + 2.1}, baselines)

    monkeypatch.setattr(pt, "bench", fake_bench)
    card = types.SimpleNamespace(sha256="abc")
    monkeypatch.setattr(pt.priors, "resolve", lambda name: types.SimpleNamespace(card=card))
    args = types.SimpleNamespace(weights={}, work=tmp_path, shared=tmp_path, threads=0, lpips_weights=None, samples=[1])
    r = pt.update_bench(t, args, json.loads(json.dumps(stored)), ["dpir", "not-in-this-target"])
    assert calls == [["dpir"]]
    assert r["decisive"] == "b" and r["met"] and math.isclose(r["gain"], float(np.mean(b - zf)), rel_tol=1e-9)
    assert math.isclose(r["gains"]["dpir"]["psnr"]["mean"], 2.1, rel_tol=1e-9)
    assert math.isclose(r["methods"]["dpir"]["psnr"], float(np.mean(zf + 2.1)), rel_tol=1e-9)
    assert r["gains"]["a"] == stored["gains"]["a"] and r["updates"][0]["solvers"] == ["dpir"]
    # a label the target now names otherwise (b → b:mri): the new one runs, the old one's figures leave the verdict
    renamed = dataclasses.replace(t, solvers=("a", "b:mri", "dpir"))
    monkeypatch.setattr(pt, "bench", lambda *a, **k: _rows({**base, "b:mri": zf + 0.5}, baselines))
    r = pt.update_bench(renamed, args, json.loads(json.dumps(stored)), ["b:mri"])
    assert set(r["gains"]) == {"a", "b:mri", "dpir"} and "b" not in r["methods"] and "zerofill" in r["methods"]
    assert r["decisive"] == "b:mri" and math.isclose(r["gain"], 0.5, rel_tol=1e-9) and not r["met"]
    # the folder's results.json keeps every solver of the earlier full run (bench rewrote it with this run's rows)
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(_rows({**base, "a": a, "b": b, "dpir": zf + 0.8}, baselines)))
    reports = []
    monkeypatch.setattr(pt, "write_report", lambda out, rows: reports.append((out, rows)))  # its grid reads outputs
    pt.update_bench(renamed, args, json.loads(json.dumps(stored)), ["b:mri"])
    rows = json.loads((folder / "results.json").read_text())
    order = list(dict.fromkeys(r["solver"] for r in rows))
    assert order == ["pinv", "zerofill", "tv", "a", "dpir", "b:mri"], order  # b dropped, b:mri after the solvers
    fresh = {r["image"]: r["psnr"] for r in rows if r["solver"] == "b:mri"}
    assert len(rows) == 6 * 6 and fresh == {f"im{k}.png": float(zf[k] + 0.5) for k in range(6)}
    assert reports == [(folder, rows)]
    # other noise or images: the re-run baseline disagrees with the stored one, and nothing is mixed
    monkeypatch.setattr(pt, "bench", lambda *a, **k: _rows({**base, "zerofill": zf + 0.01, "dpir": zf}, baselines))
    with pytest.raises(SystemExit, match="not the same images or noise"):
        pt.update_bench(t, args, json.loads(json.dumps(stored)), ["dpir"])
    with pytest.raises(SystemExit, match="other prior weights"):
        pt.update_bench(t, args, dict(stored, prior_sha256="old"), ["dpir"])


def test_prepared_photograph_crops_are_native_scale_centre_crops(pt, tmp_path):
    shared = tmp_path / "shared"
    img = torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(0))
    save_image(shared / "test" / "cbsd68" / "a.png", img)
    folder = pt.prepared("cbsd68-c128", tmp_path / "work", shared)
    crop = load_image(folder / "a.png")
    ref = load_image(shared / "test" / "cbsd68" / "a.png")[:, 11:139, 36:164]
    assert crop.shape == (3, 128, 128) and torch.equal(crop, ref)
    assert pt.prepared("faces64", tmp_path / "work", shared) == shared / "test" / "faces64"
    assert sorted(p.name for p in (tmp_path / "work" / "data").iterdir()) == ["cbsd68-c128"]  # no temp folder left


def test_prepared_folder_appears_only_when_complete(pt, tmp_path, monkeypatch):
    """A run killed part-way leaves no partial folder that a later run would benchmark as the whole test set."""
    shared = tmp_path / "shared"
    for name in "abc":
        save_image(shared / "test" / "cbsd68" / f"{name}.png", torch.rand(3, 130, 130))
    real, calls = pt.save_image, []

    def dies_on_third(path, im):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, im)

    monkeypatch.setattr(pt, "save_image", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        pt.prepared("cbsd68-c128", tmp_path / "work", shared)
    assert list((tmp_path / "work" / "data").iterdir()) == []
    monkeypatch.setattr(pt, "save_image", real)
    folder = pt.prepared("cbsd68-c128", tmp_path / "work", shared)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png", "c.png"]


def test_denoiser_target_against_bm3d_at_toy_scale(pt, tmp_path):
    pytest.importorskip("bm3d")
    from test_benchmark_solvers import _tiny_prior_file

    shared = tmp_path / "shared"
    g = torch.Generator().manual_seed(1)
    for k in range(2):
        save_image(shared / "test" / "photos" / f"{k}.png", torch.rand(3, 32, 32, generator=g))
    weights = _tiny_prior_file(tmp_path / "prior")
    t = pt.Target("den", "tiny", "denoising", "photos", kind="denoiser", baseline="bm3d", sigmas=(0.1,))
    args = type("A", (), dict(work=tmp_path / "work", shared=shared))()
    r = pt.run_denoiser(t, args, str(weights))
    cache = json.loads((tmp_path / "work" / "den" / "bm3d_cache.json").read_text())
    assert sorted(cache) == ["0.png:0.1", "1.png:0.1"]
    row = r["per_sigma"]["0.1"]
    assert math.isclose(row["bm3d"], float(np.mean(list(cache.values()))), rel_tol=1e-9)
    assert math.isclose(r["gain"], row["prior"] - row["bm3d"], abs_tol=1e-9) and r["met"] == (r["gain"] >= 0)
    cache["0.png:0.1"] = 99.0  # the cache is read back, not recomputed
    (tmp_path / "work" / "den" / "bm3d_cache.json").write_text(json.dumps(cache))
    assert pt.run_denoiser(t, args, str(weights))["per_sigma"]["0.1"]["bm3d"] > 50

    # --equivariant flips: its own row, the denoiser averaged with its mirror image, computed here by hand
    args.equivariant = ["flips"]
    r2 = pt.run_denoiser(t, args, str(weights))
    assert r2["per_sigma"] == pt.run_denoiser(t, type("A", (), dict(work=args.work, shared=shared))(),
                                              str(weights))["per_sigma"]
    from restore.degrade import image_seed
    from restore.metrics import psnr

    import priors

    prior, by_hand = priors.resolve(str(weights)), []
    with torch.no_grad():
        for k in range(2):
            x = load_image(shared / "test" / "photos" / f"{k}.png")
            g = torch.Generator().manual_seed(image_seed(0, f"{k}.png:0.1"))
            noisy = x + 0.1 * torch.randn(x.shape, generator=g)
            z = noisy[None] * 2 - 1
            d = (prior.denoise(z, 0.2) + prior.denoise(z.flip(-1), 0.2).flip(-1)) / 2
            by_hand.append(psnr(((d[0] + 1) / 2).clamp(0, 1), x))
    flips = r2["by_symmetry"]["flips"]
    assert math.isclose(flips["per_sigma"]["0.1"]["prior"], float(np.mean(by_hand)), abs_tol=1e-4)
    assert flips["per_sigma"]["0.1"]["bm3d"] == r2["per_sigma"]["0.1"]["bm3d"]
    row = pt.table({"natural-denoise": r2}).splitlines()[3]
    assert "averaged over its 2 flips symmetries" in row and "prior D(x, σ) averaged over flips" in row


def test_recipes_compare_at_the_same_point_and_crop32_sees_the_same_pixels(tr, tmp_path, monkeypatch):
    data = tmp_path / "data"
    g = torch.Generator().manual_seed(2)
    for k in range(3):
        save_image(data / f"{k}.png", torch.rand(3, 72, 80, generator=g))
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["train_recipes", "--data", str(data), "--test", str(data), "--arch", "tiny",
                                      "--size", "64", "--crop", "random", "--test-crop", "centre", "--steps", "2",
                                      "--eval-every", "1", "--test-limit", "2", "--candidates", "ddpm,crop32,wide48-g8",
                                      "--work", str(tmp_path / "w"), "--json", str(out), "--batch-size", "2"])
    tr.main()
    res = json.loads(out.read_text())
    ddpm, crop = (res["candidates"][c]["points"] for c in ("ddpm", "crop32"))
    assert [p["step"] for p in ddpm] == [1, 2] and [p["step"] for p in crop] == [4, 8]
    assert [p["pixels_seen"] for p in ddpm] == [p["pixels_seen"] for p in crop] == [2 * 64**2, 4 * 64**2]
    assert res["candidates"]["crop32"]["recipe"]["size"] == 32 and res["setup"]["test_crop"] == "centre"
    table = tr.markdown_table(res)
    first = ddpm[0]["ema"]["0.05"]
    row = next(line for line in table.splitlines() if line.startswith("| crop32 | 8 (32² crops) |"))
    assert f"({crop[0]['ema']['0.05'] - first:+.2f})" in row
    # the width candidate: --arch with 48 base channels and 8 groups, half crop32's steps (about its CPU time)
    wide = res["candidates"]["wide48-g8"]
    assert [p["step"] for p in wide["points"]] == [2, 4]
    arch = json.loads(wide["recipe"]["arch"])
    from priors.configs import ARCHITECTURES
    assert arch == dict(ARCHITECTURES["tiny"], num_channels=48, norm_groups=8)
    assert res["candidates"]["ddpm"]["recipe"]["arch"] == "tiny"
    # parameters grow with the square of the width, near enough (the biases and norms grow linearly)
    ratio = wide["parameters"] / res["candidates"]["crop32"]["parameters"]
    assert 2.0 < ratio < 48**2 / 32**2
    # run on with a larger --steps: the finished points are kept, the new one added, the recorded steps follow
    argv = list(sys.argv)
    argv[argv.index("--steps") + 1], argv[argv.index("--candidates") + 1] = "3", "ddpm"
    monkeypatch.setattr(sys, "argv", argv)
    tr.main()
    res2 = json.loads(out.read_text())
    assert [p["step"] for p in res2["candidates"]["ddpm"]["points"]] == [1, 2, 3]
    assert res2["candidates"]["ddpm"]["points"][:2] == ddpm
    assert res2["candidates"]["ddpm"]["recipe"]["steps"] == 3 and res2["setup"]["steps"] == 3


def test_recipes_table_compares_at_equal_training_time(tr):
    """--compare time: the first candidate's PSNR interpolated linearly in training seconds; a point outside its
    range gets no difference; --compare point keeps the same-index difference."""
    pt = lambda sec, v: {"train_seconds": sec, "images_seen": 16, "ema": {"0.1": v}}  # noqa: E731
    res = {"setup": {"sigmas": [0.1], "size": 32},
           "candidates": {"base": {"recipe": {}, "points": [pt(100, 30.0), pt(200, 32.0)]},
                          "big": {"recipe": {}, "points": [pt(150, 30.5), pt(250, 33.0)]}}}
    rows = tr.markdown_table(res, "time").splitlines()
    assert rows[4].endswith("| 30.50 (-0.50) |")        # base at 150 s: 31.0 by interpolation
    assert rows[5].endswith("| 33.00 |")                # 250 s: beyond the base curve, no difference
    rows = tr.markdown_table(res).splitlines()
    assert rows[4].endswith("| 30.50 (+0.50) |") and rows[5].endswith("| 33.00 (+1.00) |")


def test_recipes_measure_every_ema_profile_of_one_run(tr, tmp_path, monkeypatch):
    """crop32-ema: every profile measured at every point; the shipped EMA's own profile among the extras would equal
    it; the table orders profiles by relative length (raw weights first) and gives the difference from the shipped
    EMA."""
    data = tmp_path / "data"
    g = torch.Generator().manual_seed(3)
    for k in range(3):
        save_image(data / f"{k}.png", torch.rand(3, 72, 80, generator=g))
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["train_recipes", "--data", str(data), "--test", str(data), "--arch", "tiny",
                                      "--size", "64", "--crop", "random", "--test-crop", "centre", "--steps", "2",
                                      "--eval-every", "1", "--test-limit", "2", "--candidates", "crop32-ema",
                                      "--work", str(tmp_path / "w"), "--json", str(out), "--batch-size", "2"])
    monkeypatch.setitem(tr.CANDIDATES, "crop32-ema", dict(tr.CANDIDATES["crop32-ema"], _emas=("0.999", "rel:0.05")))
    tr.main()
    res = json.loads(out.read_text())
    points = res["candidates"]["crop32-ema"]["points"]
    assert [p["step"] for p in points] == [4, 8]
    for p in points:
        assert set(p["emas"]) == {"0.999", "rel:0.05"} and p["emas"]["0.999"] == p["ema"]
        assert p["emas"]["rel:0.05"] != p["ema"]
    lines = tr.ema_table(res, "crop32-ema").splitlines()
    assert lines[0].startswith("crop32-ema, step 8 ")
    body = lines[4:]
    assert body[0].startswith("| raw weights | 0 |") and len(body) == 4
    rels = [float(line.split("|")[2]) for line in body]
    assert rels == sorted(rels)
    assert math.isclose(rels[body.index(next(x for x in body if x.startswith("| rel:0.05")))],
                        tr.relative_length("rel:0.05", 8), abs_tol=1e-3)
    shipped = next(x for x in body if "(shipped)" in x)
    assert "(" not in shipped.split("|")[3]  # the shipped row carries no difference
    d = points[-1]["emas"]["rel:0.05"]["0.1"] - points[-1]["ema"]["0.1"]
    assert f"({d:+.2f})" in next(x for x in body if x.startswith("| rel:0.05"))


def test_quality_against_compute_projection_solves_the_log_linear_trend(tmp_path):
    pc = _module("prior_curve")
    # PSNR = 20 + 0.5·log2(pixels): BM3D's 27 dB is reached at 2^14 pixels, 16× the newest point's 2^10
    points = [{"pixels_seen": 2**k, "psnr": {"0.1": 20 + 0.5 * k}} for k in (6, 8, 10)]
    pr = pc.projection(points, "0.1", 27.0, last=3)
    assert math.isclose(pr["per_doubling"], 0.5, rel_tol=1e-9) and math.isclose(pr["pixels_needed"], 2**14,
                                                                                  rel_tol=1e-6)
    assert math.isclose(pr["factor"], 16.0, rel_tol=1e-6)
    flat = [{"pixels_seen": 2**k, "psnr": {"0.1": 25 - 0.1 * k}} for k in (6, 8, 10)]
    assert pc.projection(flat, "0.1", 27.0, last=3)["pixels_needed"] is None
    # a card from before the cumulative fields: its own run and its parent's (taken at the same crop size)
    card = type("C", (), {"extra": {"steps": 1000, "batch_size": 16, "train_seconds": 100.0, "train_size": 32,
                                    "init_steps": 1400, "init_batch_size": 16, "init_train_seconds": 50.0}})()
    assert pc.compute_of(card) == (2400 * 16, 2400 * 16 * 32 * 32, 150.0)


def test_deblur_curve_projects_and_measures_each_solvers_detail(tmp_path):
    from scipy import ndimage

    dc = _module("deblur_curve")
    # gain = 0.1·log2(pixels) − 0.5: the +1.5 margin at 2^20 pixels, 2^8 × the newest point's 2^12
    pts = [{"pixels_seen": 2**k, "gain": 0.1 * k - 0.5} for k in (8, 10, 12)]
    pr = dc.projection(pts, 1.5, last=3)
    assert math.isclose(pr["per_doubling"], 0.1, rel_tol=1e-9) and math.isclose(pr["factor"], 2.0**8, rel_tol=1e-6)
    assert dc.projection(pts[-1:], 1.5, last=3)["per_doubling"] is None  # one training length: no trend
    # the table's sentence: the projected compute, or that the newest point already clears the margin
    rows = [dict(p, label=f"s{p['pixels_seen']}", seconds=1.0, psnr=24.0, gain_half=0.1, over_tv=0.0,
                 over_tv_half=0.1, lpips=0.3) for p in pts]
    res = {"baseline": "wiener", "points": rows, "projection": pr, "margin": 1.5}
    assert "the margin (+1.5 dB) at 1·10⁶ pixels seen, 256× the newest." in dc.table(res)
    met = dict(res, margin=0.5, projection=dc.projection(rows, 0.5, last=3))
    assert "the newest point already clears the margin (+0.5 dB)." in dc.table(met)
    # detail: each output's Laplacian energy over its reference's (named in its sidecar), geometric mean
    rng = np.random.default_rng(0)
    rows, ratios, chromas = [], [], []
    for k, amp in enumerate((0.3, 0.6, 1.0)):
        ref = torch.from_numpy(rng.uniform(0.2, 0.8, (3, 16, 16))).float()
        out = (0.5 + amp * (ref - 0.5)).clamp(0, 1)
        save_image(tmp_path / f"ref{k}.png", ref)
        save_image(tmp_path / f"out{k}.png", out)
        (tmp_path / f"out{k}.json").write_text(json.dumps({"reference": str(tmp_path / f"ref{k}.png")}))
        rows.append({"solver": "ddrm", "status": "written", "psnr": 20.0 + k, "lpips": 0.1 * k,
                     "output": str(tmp_path / f"out{k}.png")})
        x = [load_image(tmp_path / f"{n}{k}.png").numpy().astype(np.float64) for n in ("out", "ref")]
        lap = [ndimage.laplace(v.mean(0), mode="mirror") for v in x]
        ratios.append(np.mean(lap[0] ** 2) / np.mean(lap[1] ** 2))
        col = [sum(np.mean(ndimage.laplace(v[c] - v[1], mode="mirror") ** 2) for c in (0, 2)) for v in x]
        chromas.append(col[0] / col[1])
    rows.append({"solver": "dpir", "status": "written", "psnr": 99.0, "lpips": 0.9, "output": "elsewhere.png"})
    m = dc.solver_means(rows, "ddrm")
    assert m["n"] == 3 and math.isclose(m["psnr"], 21.0) and math.isclose(m["lpips"], 0.1)
    assert math.isclose(m["detail"], float(np.exp(np.mean(np.log(ratios)))), rel_tol=1e-9)
    assert math.isclose(m["chroma"], float(np.exp(np.mean(np.log(chromas)))), rel_tol=1e-9)
    assert 0.05 < ratios[0] < 0.15 and math.isclose(ratios[2], 1.0)  # amplitude² in Laplacian energy
    assert dc.solver_means(rows, "dpir")["detail"] is None  # no sidecar: no detail, not a made-up 1
    save_image(tmp_path / "grey.png", torch.full((1, 8, 8), 0.5))
    (tmp_path / "grey.json").write_text(json.dumps({"reference": str(tmp_path / "grey.png")}))
    assert dc.chroma_ratio(str(tmp_path / "grey.png")) is None  # a grey image has no colour to speckle


def test_colour_stats_of_sample_sets():
    """``priors_eval.colour_stats`` (the faces64 colour-cast statistic): channel-mean correlations and spreads equal
    numpy's on the per-image means; grey images of varying brightness correlate fully, independently tinted ones not."""
    pe = _module("priors_eval")
    g = torch.Generator().manual_seed(0)
    level = torch.rand(200, 1, 1, 1, generator=g)
    grey = (level + 0.05 * torch.rand(200, 3, 8, 8, generator=g)).clamp(0, 1)
    s = pe.colour_stats(grey)
    assert s["n"] == 200 and min(s["corr_rg_rb_gb"]) > 0.99
    tinted = torch.rand(200, 3, 1, 1, generator=g).expand(200, 3, 8, 8)
    s = pe.colour_stats(tinted)
    m = tinted.double().mean(dim=(2, 3)).numpy()
    c = np.corrcoef(m.T)
    assert s["corr_rg_rb_gb"] == pytest.approx([c[0, 1], c[0, 2], c[1, 2]], abs=1e-3)
    assert max(abs(v) for v in s["corr_rg_rb_gb"]) < 0.2
    assert s["std_rgb"] == pytest.approx(list(m.std(axis=0, ddof=1)), abs=1e-4)
    assert s["std_rgb"][0] == pytest.approx(1 / math.sqrt(12), abs=0.03)  # uniform levels


def test_autoencoder_curve_measures_each_chunk_once_and_projects(tmp_path):
    """``benchmarks/autoencoder_curve.py`` at toy scale: a point per chunk with the test PSNR of the checkpoint
    (recomputed here from the checkpoint, independently of the script's loop), no point twice when the command is
    run again, one more when it is continued; the projection solves PSNR = a + b·log₂(steps)."""
    from solver_testing import random_image_folder

    ac = _module("autoencoder_curve")
    points = [{"steps": 2**k, "psnr": 24 + 1.5 * k} for k in (8, 9, 10)]  # 32 dB where 1.5·k = 8
    pr = ac.projection(points, 32.0, last=3)
    assert math.isclose(pr["per_doubling"], 1.5, rel_tol=1e-9)
    assert math.isclose(pr["steps_needed"], 2 ** (8 / 1.5), rel_tol=1e-6)
    assert ac.projection([{"steps": 2**k, "psnr": 30 - k} for k in (1, 2)], 32.0, 3)["steps_needed"] is None

    train = random_image_folder(tmp_path / "train", n=12, size=16)
    test = random_image_folder(tmp_path / "test", n=3, size=16, seed=1)
    out = tmp_path / "curve.json"
    common = ["--json", str(out), "--data", str(train), "--test", str(test), "--work", str(tmp_path / "w"),
              "--arch", '{"base_channels": 8, "num_res_blocks": 1, "channel_mult": "1,2"}', "--batch-size", "2",
              "--chunk", "2", "--label", "toy"]
    assert ac.main(common + ["--until", "4"]) == 0
    run = next(iter(json.loads(out.read_text())["runs"].values()))
    assert [p["steps"] for p in run["points"]] == [2, 4] and run["label"] == "toy"
    images = torch.stack([load_image(p) for p in sorted((tmp_path / "test").iterdir())])
    checkpoint = next((tmp_path / "w").glob("*/train/checkpoint.pt"))
    assert math.isclose(run["points"][-1]["psnr"], ac.test_psnr(checkpoint, images), rel_tol=1e-9)
    assert ac.main(common + ["--until", "4"]) == 0  # nothing new
    assert len(next(iter(json.loads(out.read_text())["runs"].values()))["points"]) == 2
    assert ac.main(common + ["--until", "6"]) == 0
    run = next(iter(json.loads(out.read_text())["runs"].values()))
    assert [p["steps"] for p in run["points"]] == [2, 4, 6] and run["projection"]["points"] == 3
    assert "| toy | 6 | 12 |" in ac.table(json.loads(out.read_text()))
    # a cosine learning rate is its own run, named by where its decay ends; its last point is the fully decayed one
    assert ac.main(common + ["--until", "4", "--lr-schedule", "cosine"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 2 and ac.run_name(json.loads(common[9]), "cosine", 4) in runs
    cosine = runs[ac.run_name(json.loads(common[9]), "cosine", 4)]
    assert cosine["lr_schedule"] == ["cosine", 4] and [p["steps"] for p in cosine["points"]] == [2, 4]
