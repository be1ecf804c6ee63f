"""The tweedie solver: the posterior mean of denoising in one evaluation, against the exact Gaussian posterior, and
scikit-image's noise estimate when no σ is given."""

import numpy as np
import pytest
import torch
from skimage.restoration import estimate_sigma

from restore.solvers import SolverError, get_solver, solve
from tests.solver_testing import gaussian_problem, run_sample, smoke_problem, tiny_latent_prior


@pytest.mark.parametrize("sigma_y", [0.05, 0.2])
def test_it_is_the_exact_posterior_mean_of_a_gaussian_prior(sigma_y):
    prior, op, _, y = gaussian_problem("denoise", shape=(2, 8, 8), sigma_y=sigma_y, batch=2, mean=0.1,
                                            alpha=2.0, scale=0.4)
    mean, _ = prior.posterior(y, op, sigma_y)  # dense closed form: μ + Σ(Σ + (2σ)²I)⁻¹(2y − 1 − μ) on [-1, 1]
    x = run_sample(get_solver("tweedie"), y, op, prior, seeds=[0, 1], noise=sigma_y)
    # the estimate is clamped to the image range, as every solver's is
    torch.testing.assert_close(x.double(), mean.reshape(x.shape).clamp(-1, 1), atol=2e-5, rtol=1e-4)


def test_without_a_known_sigma_it_uses_scikit_images_estimate_and_reports_it():
    prior, op, _, y = gaussian_problem("denoise", shape=(3, 16, 16), sigma_y=0.1, batch=2, scale=0.3)
    solver = get_solver("tweedie")
    x = run_sample(solver, y, op, prior, seeds=[0, 1], noise=0.0)
    expect = [float(estimate_sigma(img.permute(1, 2, 0).double().numpy(), channel_axis=-1, average_sigmas=True))
              for img in y]
    np.testing.assert_allclose(solver.reported["sigma_used"], expect, atol=1e-6)
    ref = run_sample(get_solver("tweedie", sigma_y=expect[0]), y[:1], op, prior, seeds=[0])
    torch.testing.assert_close(x[:1], ref, atol=1e-6, rtol=1e-6)
    # sigma_y ≥ 0 is a σ given, as for ddrm: 0 leaves the image as it is
    same = run_sample(get_solver("tweedie", sigma_y=0.0), y, op, prior, seeds=[0, 1], noise=0.1)
    torch.testing.assert_close(same, (y * 2 - 1).clamp(-1, 1))


def test_it_refuses_other_operators_and_latent_priors_and_runs_once():
    prior, op, _, y = smoke_problem("sr")
    with pytest.raises(SolverError, match="posterior mean for denoising.*use a sampler"):
        get_solver("tweedie").check(op, prior)
    _, den, _, _ = gaussian_problem("denoise", shape=(3, 16, 16))
    with pytest.raises(SolverError, match="needs a pixel-space prior"):
        get_solver("tweedie").check(den, tiny_latent_prior())
    prior, den, _, y = gaussian_problem("denoise", shape=(1, 8, 8), sigma_y=0.1)
    res = solve(get_solver("tweedie"), y, den, prior, seeds=[0], samples=3, noise=0.1)
    assert res.samples == 1 and res.cost.nfe == 1
