"""Posterior-mean estimates: ``solve(..., samples=K, estimate=mean|median|sample)``, ``restore solve --estimate``, and
``restore bench --samples 1,4`` (the K-sample estimate beside single samples).

Theory (x the true image, m the posterior mean, Σ the posterior covariance, samples independent given y): a sampler
whose samples have mean m̂ and covariance C gives E‖s − x‖² = E‖m̂ − x‖² + tr C for one sample s and
E‖m_K − x‖² = E‖m̂ − x‖² + tr C / K for the mean m_K of K samples. An exact sampler (m̂ = m, C = Σ; x drawn from the
prior, so E‖m − x‖² = tr Σ) thus has one sample's squared error 2K/(K + 1) ≈ 1.88 times the K = 16 mean's. DDNM is
exact in its mean here but under-dispersed: C ≈ ρ Σ with ρ = 0.65–0.75 (measured by its std map; the DDNM tests
of test_solvers_dps_ddnm.py find 0.54–0.91 of the posterior's spread), so the ratio it gives is ≈ 1.6.
"""

import json

import pytest
import torch

from restore.cli import main
from restore.io import load_image, save_image
from restore.solvers import SolverError, get_solver, solve
from solver_testing import GAUSSIAN_SPECS, gaussian_problem
from test_solve_cli import _tiny_prior_file

pytestmark = pytest.mark.usefixtures("one_thread")

K = 16
#: (operator, σ_y): noise-free DDNM on SR, DDNM+ on noisy inpainting and denoising (1×8×8, 48 problems each)
PROBLEMS = [("sr", 0.0), ("mask", 0.025), ("denoise", 0.025)]
BATCH = 48


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def _errors(name: str, sigma: float, seed: int = 0) -> dict:
    """Summed squared errors (on [0, 1]) of the K = 16 mean, the K = 16 median and one sample (K = 1) over BATCH
    problems, beside the exact posterior's ‖m − x‖² and tr Σ and DDNM's own spread tr C (its std map)."""
    # pixel std 0.25 on [-1, 1]: no sample leaves [-1, 1], so the clamp of solve() does not bias the errors
    prior, op, x_true, y = gaussian_problem(GAUSSIAN_SPECS[name], sigma_y=sigma, seed=seed, batch=BATCH, scale=0.25)
    x01 = (x_true.double() + 1) / 2
    m, cov = prior.posterior(y, op, sigma)
    seeds = list(range(1000 * seed, 1000 * seed + BATCH))
    out = {}
    for key, k, estimate in (("mean", K, "mean"), ("median", K, "median"), ("sample", 1, "mean")):
        result = solve(get_solver("ddnm"), y, op, prior, seeds, noise=sigma, samples=k, estimate=estimate)
        out[key] = float(((result.x.double() - x01) ** 2).sum())
        if key == "mean":
            out["tr_c"] = float((result.std.double() ** 2).sum())
    out["bias"] = float((((m + 1) / 2 - x01) ** 2).sum())       # Σ_i ‖m_i − x_i‖²
    out["tr"] = float(sum(c.diagonal().sum() for c in cov) / 4)  # Σ_i tr Σ_i on [0, 1]
    return out


def test_the_mean_of_16_samples_halves_the_squared_error_as_the_posterior_predicts():
    """Measured (seed 0): one sample / K = 16 mean 1.55 (sr), 1.63 (mask), 1.62 (denoise), against 1.58, 1.62, 1.63
    predicted from DDNM's spread ρ = 0.66, 0.74, 0.72 (an exact sampler: 1.87, 1.83, 1.86); the mean's error is
    1.00, 1.04, 1.02 of the exact posterior's E‖m_16 − x‖² = Σ ‖m − x‖² + tr Σ / 16; median/mean 1.009–1.020. Over
    seeds 0–4 the per-operator ratio stays within 0.95–1.03 of the prediction (pooled: 0.97–1.02), the mean's error
    within 0.985–1.08 of the exact one, ρ within 0.65–0.75 and median/mean within 1.005–1.022."""
    totals = {"sample": 0.0, "mean": 0.0, "predicted_sample": 0.0, "predicted_mean": 0.0}
    for name, sigma in PROBLEMS:
        e = _errors(name, sigma)
        rho = e["tr_c"] / e["tr"]
        assert 0.6 < rho < 0.8, (name, rho)  # DDNM's known under-dispersion (an exact sampler: 1)
        # the K-sample mean beats one sample, and the median lies between (less efficient than the mean)
        assert e["mean"] < e["median"] < e["sample"], (name, e)
        assert e["median"] < 1.05 * e["mean"], (name, e["median"] / e["mean"])
        # the mean's error is the exact posterior's (DDNM's mean is the posterior mean up to its small bias)
        exact_mean = e["bias"] + e["tr"] / K
        assert 0.92 < e["mean"] / exact_mean < 1.12, (name, e["mean"] / exact_mean)
        # one sample against the mean: measured ratio near the closed form with DDNM's spread ρ tr Σ
        predicted = (e["bias"] + rho * e["tr"]) / (e["bias"] + rho * e["tr"] / K)
        assert abs((e["sample"] / e["mean"]) / predicted - 1) < 0.08, (name, e["sample"] / e["mean"], predicted)
        assert e["sample"] / e["mean"] > 1.45  # well above 1: the mean is the better estimate
        totals["sample"] += e["sample"]
        totals["mean"] += e["mean"]
        totals["predicted_sample"] += e["bias"] + rho * e["tr"]
        totals["predicted_mean"] += e["bias"] + rho * e["tr"] / K
    # pooled over the three operators (144 problems): measured 1.59 against 1.60
    measured = totals["sample"] / totals["mean"]
    predicted = totals["predicted_sample"] / totals["predicted_mean"]
    assert abs(measured / predicted - 1) < 0.05, (measured, predicted)


def test_sample_is_the_k1_run_bit_for_bit_and_the_std_map_spans_all_k():
    prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS["mask"], sigma_y=0.025, seed=3, batch=3, scale=0.25)
    args = (y, op, prior, [5, 6, 7])
    one = solve(get_solver("ddnm", steps=20), *args, noise=0.025, samples=1)
    first = solve(get_solver("ddnm", steps=20), *args, noise=0.025, samples=4, estimate="sample")
    mean = solve(get_solver("ddnm", steps=20), *args, noise=0.025, samples=4)
    median = solve(get_solver("ddnm", steps=20), *args, noise=0.025, samples=4, estimate="median")
    assert torch.equal(first.x, one.x)
    assert first.estimate == "sample" and mean.estimate == "mean" and median.estimate == "median"
    assert first.samples == 4 and first.std is not None and torch.equal(first.std, mean.std)  # spread over all 4
    assert not torch.equal(mean.x, one.x) and not torch.equal(median.x, mean.x)
    # K = 1: the mean and the median are the sample itself
    for estimate in ("mean", "median"):
        assert torch.equal(solve(get_solver("ddnm", steps=20), *args, noise=0.025, estimate=estimate).x, one.x)
    with pytest.raises(SolverError, match="--estimate must be one of mean, median, sample, got 'mode'"):
        solve(get_solver("ddnm", steps=20), *args, noise=0.025, samples=4, estimate="mode")


def test_a_deterministic_solver_runs_once_whatever_k():
    prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS["sr"], seed=1)
    one = solve(get_solver("pinv"), y, op, prior, [0])
    four = solve(get_solver("pinv"), y, op, prior, [0], samples=4, estimate="median")
    assert four.samples == 1 and four.std is None and four.cost.operator_evals == one.cost.operator_evals
    assert torch.equal(four.x, one.x)


def test_solve_estimate_option_sidecar_and_std_map(tmp_path, capsys):
    prior = _tiny_prior_file(tmp_path)
    save_image(tmp_path / "clean.png", torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert run(capsys, "degrade", tmp_path / "clean.png", "-o", "sr:factor=2", "--noise", "0.02",
               "--out", tmp_path / "m")[0] == 0
    common = ["solve", tmp_path / "m", "--solver", "ddnm", "--prior", prior, "--steps", "3"]
    outputs = {}
    for name, extra in (("k1", ["--samples", "1"]), ("first", ["--samples", "3", "--estimate", "sample"]),
                        ("median", ["--samples", "3", "--estimate", "median"]), ("mean", ["-k", "3"])):
        code, _, err = run(capsys, *common, *extra, "--out", tmp_path / name)
        assert code == 0, err
        outputs[name] = (load_image(tmp_path / name / "clean.png"),
                         json.loads((tmp_path / name / "clean.json").read_text()))
    assert torch.equal(outputs["first"][0], outputs["k1"][0])  # --samples 3 --estimate sample == --samples 1
    assert not torch.equal(outputs["mean"][0], outputs["k1"][0])
    for name, samples, estimate in (("k1", 1, "mean"), ("first", 3, "sample"), ("median", 3, "median"),
                                    ("mean", 3, "mean")):
        side = outputs[name][1]
        assert (side["samples"], side["estimate"]) == (samples, estimate), name
        assert (tmp_path / name / "clean_std.png").is_file() == (samples > 1)
    code, out, err = run(capsys, *common, "-k", "3", "--estimate", "mode", "--out", tmp_path / "bad")
    assert code == 2 and "--estimate must be one of mean, median, sample, got 'mode'." in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_solve_a_deterministic_solver_says_once_that_it_runs_once(tmp_path, capsys):
    for k in range(2):
        save_image(tmp_path / "in" / f"{k}.png", torch.rand(3, 16, 16))
    assert run(capsys, "degrade", tmp_path / "in", "-o", "sr:factor=2", "--out", tmp_path / "m")[0] == 0
    code, out, err = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--samples", "4", "--out",
                         tmp_path / "r")
    assert code == 0, err
    said = " ".join(out.split())
    assert said.count("solver 'pinv' is deterministic: its 4 samples would be identical, so it runs once.") == 1
    for k in range(2):
        side = json.loads((tmp_path / "r" / f"{k}.json").read_text())
        assert side["samples"] == 1 and side["cost"]["operator_evals"] == 1
        assert not (tmp_path / "r" / f"{k}_std.png").exists()


def test_bench_shows_single_samples_beside_the_k_sample_estimate(tmp_path, capsys):
    prior = _tiny_prior_file(tmp_path)
    g = torch.Generator().manual_seed(0)
    for k in range(2):
        save_image(tmp_path / "clean" / f"{k}.png", torch.rand(3, 16, 16, generator=g))
    code, out, err = run(capsys, "bench", tmp_path / "clean", "-o", "sr:factor=2", "--solver", "ddnm", "--prior",
                         prior, "--steps", "3", "--noise", "0.02", "--baselines", "tv", "--samples", "1,2",
                         "--estimate", "median", "--out", tmp_path / "b")
    assert code == 0, err
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    by_label = {}
    for r in rows:
        by_label.setdefault(r["solver"], []).append(r)
    # the deterministic pinv and tv run once; ddnm once per K
    assert set(by_label) == {"pinv", "tv", "ddnm", "ddnm (median of 2)"}
    assert all(len(v) == 2 and all(r["status"] == "written" for r in v) for v in by_label.values())
    assert {(r["samples"], r["estimate"]) for r in by_label["ddnm (median of 2)"]} == {(2, "median")}
    assert {r["samples"] for label in ("pinv", "tv", "ddnm") for r in by_label[label]} == {1}
    assert by_label["ddnm (median of 2)"][0]["nfe"] == 2 * by_label["ddnm"][0]["nfe"]
    header = (tmp_path / "b" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"samples", "estimate"} <= set(header)
    assert "| ddnm (median of 2) | 2 |" in (tmp_path / "b" / "report.md").read_text()
    # the K-sample run has its own folder (a rerun with another K or estimate resumes nothing of it)
    side = json.loads((tmp_path / "b" / "op0" / "ddnm-median2" / "0.json").read_text())
    assert side["samples"] == 2 and side["estimate"] == "median"
    for bad, fragment in (("0", "--samples must be between 1"), ("1,x", "comma-separated list such as 1,4")):
        code, _, err = run(capsys, "bench", tmp_path / "clean", "-o", "sr:factor=2", "--solver", "ddnm",
                           "--samples", bad, "--out", tmp_path / "x")
        assert code == 2 and fragment in err and "Traceback" not in err, (bad, err)
