"""DAPS and RED-Diff: exact tests against a Gaussian prior, smoke tests on a tiny random UNet, refusals.

Exactness. With the stationary Gaussian prior (exact Wiener denoiser) and a linear operator every step of both solvers
is an affine map plus Gaussian noise, so what they compute is known in closed form:

* DAPS — its output distribution is Gaussian, and ``daps_moments`` propagates its mean and covariance through the very
  steps the solver takes (poly-7 levels, Euler PF-ODE, J Langevin or HMC steps with the decaying step size,
  re-noising). The solver's samples must match that distribution within Monte-Carlo error (a χ² test on the whitened
  mean and the whitened sample covariance); this pins every constant (τ, the residual scale, the step sizes). The same
  closed form then says how far DAPS itself is from the exact posterior: its mean is close, but its covariance is
  over-dispersed — the approximation p(x₀|x_t) ≈ N(x̂₀, σ_t² I) adds roughly σ_t² of variance at every level to
  directions the prior holds tightly, which later levels only partly shrink (whitened eigenvalues 1.07–1.7 for the
  settings below; the bounds asserted are 0.95–3).
* RED-Diff — with ε̂ the exact ε-prediction, E[ε̂ − ε] = σ_t(Σ + σ_t² I)⁻¹(μ − m), so the expected gradient at
  timestep t vanishes at the posterior mean for the prior N(m, Σ + σ_t² I) and the noise variance
  ρ_t² = λ·w(σ_t)·σ_t·n_y/(v·s²·n_x) on the [0, 1] scale (s = 2: the [-1, 1] residual; n_x, n_y: pixels and measured
  entries). The sweep ends at σ_0 = 0.01, where ρ is tiny (λ = 0.25: ρ ≈ 0.0025·√(n_y/n_x)), so RED-Diff lands on the
  *noise-free* MAP (= posterior mean): exact for noise-free data, and for noisy data a point that is not the posterior
  mean unless λ = v·s²·n_x·σ_y²/(w(σ_0)·σ_0·n_y) (≈ 100–400 here, far outside where its Adam noise settles). The mean
  of K runs is compared with that fixed point within Monte-Carlo error.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch

import operators
from priors.gaussian import dense_matrix
from restore.solvers import SolverError, get_solver, solve
from restore.solvers.daps import poly_sigmas, residual_scale
from restore.solvers.reddiff import WEIGHTINGS, _measured_entries
from tests.solver_testing import (GAUSSIAN_SPECS, SMOKE_SPECS, gaussian_problem, run_sample, smoke_problem,
                                  tiny_unet_prior)

SIGMA_Y = 0.05                        # measurement noise on [0, 1]
TAU = 2 * math.sqrt(2) * SIGMA_Y      # exp(−‖2r‖²/τ²) = exp(−‖r‖²/(2σ_y²)): DAPS's likelihood equals the true one
# a short DAPS run: 30 levels σ 100 → 0.1, 3 Euler steps each, 20 Langevin steps with lr 1e-2 decaying to 1e-4; the
# fixed τ given (likelihood="official": τ is used as it is, whatever noise the solver is told)
DAPS_TEST = dict(annealing_steps=30, ode_steps=3, mcmc_steps=20, lr=1e-2, tau=TAU, likelihood="official")
# DAPS-1K (200 levels × 5 ODE steps, 100 Langevin steps) with τ matched to the noise and the step size scaled to it
DAPS_1K = dict(tau=TAU, lr=3e-3, likelihood="official")
SPECS = dict(GAUSSIAN_SPECS, blur="blur:kind=gaussian,size=3,std=0.5,boundary=circular")  # well-conditioned blur


# ---------------------------------------------------------------------------------------------------------------------
# closed forms


def daps_moments(prior, op, y, p) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (flattened [-1, 1] image) of DAPS's output for the Gaussian prior and a linear operator."""
    sigma_cov, m = prior.covariance(), prior.mean_vector()
    n = len(m)
    eye = np.eye(n)
    a_mat, b = dense_matrix(op)
    yv = y.reshape(-1).double().numpy()
    s2, tau2 = residual_scale(op) ** 2, p["tau"] ** 2
    w, u = np.linalg.eigh(sigma_cov)

    def wiener(sig):  # D(x, σ) = m + Σ(Σ + σ²)⁻¹(x − m)
        return (u * (w / (w + sig**2))) @ u.T

    # score(x) = −H x + x̂/σ² + c:  ∇‖s(A(x+1)/2 + b − y)‖²/τ² = (s²/τ²)(AᵀA x/2 + Aᵀ(A1/2 + b − y))
    data_h = (s2 / (2 * tau2)) * a_mat.T @ a_mat
    c = -(s2 / tau2) * a_mat.T @ (a_mat @ np.ones(n) / 2 + b - yv)
    big_n, big_m, big_j = p["annealing_steps"], p["ode_steps"], p["mcmc_steps"]
    sigmas = poly_sigmas(p["sigma_max"], p["sigma_min"], big_n + 1)[:big_n] + [0.0]
    mean, cov = np.zeros(n), sigmas[0] ** 2 * eye
    for k in range(big_n):
        sig = sigmas[k]
        ode = eye
        grid = poly_sigmas(sig, p["ode_sigma_min"], big_m + 1)
        for s_cur, s_next in zip(grid[:-1], grid[1:]):  # x ← x + (σ'−σ)(x − D(x,σ))/σ
            ode = (eye + (s_next - s_cur) / s_cur * (eye - wiener(s_cur))) @ ode
        mh, ch = m + ode @ (mean - m), ode @ cov @ ode.T
        eta = p["lr"] * (1 + k / (big_n + 1) * (p["lr_min_ratio"] - 1))
        h_mat = data_h + eye / sig**2
        # the chain from x = x̂₀ as an affine map of x̂₀ plus noise: x_J = P x̂₀ + q + ξ, Cov ξ = C
        if p["mcmc"] == "langevin":
            # x ← T x + (η/σ²)x̂₀ + ηc + √(2η)ε with T = I − ηH symmetric: geometric sums in T's eigenbasis,
            # P = T^J + (η/σ²)Σ_{i<J} T^i,  q = Σ_{i<J} T^i ηc,  C = 2η Σ_{i<J} T^{2i}
            lam, vec = np.linalg.eigh(eye - eta * h_mat)
            powers = lam[:, None] ** np.arange(big_j)
            geo1, geo2 = powers.sum(1), (powers**2).sum(1)
            pm = (vec * (lam**big_j + eta / sig**2 * geo1)) @ vec.T
            q = (vec * geo1) @ vec.T @ (eta * c)
            cn = (vec * (2 * eta * geo2)) @ vec.T
        else:
            # (x, v) jointly: v ← m v + h·score(x) + √(2(1−m))ε ; x ← x + h v  (h = √η), from v₀ ~ N(0, I)
            mom, h = p["momentum"], math.sqrt(eta)
            t_mat = np.block([[eye - h * h * h_mat, h * mom * eye], [-h * h_mat, mom * eye]])
            r_mat = np.vstack([h * h / sig**2 * eye, h / sig**2 * eye])
            r0 = np.concatenate([h * h * c, h * c])
            q_noise = 2 * (1 - mom) * np.block([[h * h * eye, h * eye], [h * eye, eye]])
            pm, q = np.vstack([eye, np.zeros((n, n))]), np.zeros(2 * n)
            cn = np.block([[np.zeros((n, n)), np.zeros((n, n))], [np.zeros((n, n)), eye]])
            for _ in range(big_j):
                pm, q, cn = t_mat @ pm + r_mat, t_mat @ q + r0, t_mat @ cn @ t_mat.T + q_noise
            pm, q, cn = pm[:n], q[:n], cn[:n, :n]
        mean, cov = pm @ mh + q, pm @ ch @ pm.T + cn + sigmas[k + 1] ** 2 * eye
    return mean, cov


def gaussian_map(prior, op, y, rho: float, extra_var: float = 0.0) -> np.ndarray:
    """Posterior mean (= MAP) of the [-1, 1] image for the prior N(m, Σ + extra_var·I) and y = A((x+1)/2) + N(0, ρ²)."""
    sigma_cov = prior.covariance() + extra_var * np.eye(len(prior.mean_vector()))
    m = prior.mean_vector()
    a_mat, b = dense_matrix(op)
    h = 0.5 * a_mat
    yv = y.reshape(-1).double().numpy() - 0.5 * a_mat @ np.ones(len(m)) - b
    s = h @ sigma_cov @ h.T + rho**2 * np.eye(h.shape[0])
    return m + sigma_cov @ h.T @ np.linalg.pinv(s, rcond=1e-12, hermitian=True) @ (yv - h @ m)


def whitened(mean_hat, cov_hat, mean, cov):
    """(|L⁻¹(m̂ − m)|²/N, tr(L⁻¹ Ĉ L⁻ᵀ)/N, eigenvalues of L⁻¹ Ĉ L⁻ᵀ) with L Lᵀ = cov."""
    chol = np.linalg.cholesky(cov)
    d = np.linalg.solve(chol, mean_hat - mean)
    wmat = np.linalg.solve(chol, np.linalg.solve(chol, cov_hat).T)
    n = len(mean)
    return float(d @ d) / n, float(np.trace(wmat)) / n, np.linalg.eigvalsh(0.5 * (wmat + wmat.T))


pytestmark = pytest.mark.usefixtures("one_thread")


def replicas(y: torch.Tensor, k: int) -> torch.Tensor:
    return y.expand(k, *y.shape[1:]).contiguous()


# ---------------------------------------------------------------------------------------------------------------------
# DAPS on the Gaussian prior


@pytest.mark.parametrize("closed_form", ["auto", "off"])
@pytest.mark.parametrize("family", ["sr", "mask", "blur", "denoise"])
def test_daps_samples_follow_their_closed_form(family, closed_form):
    """K = 128 DAPS samples vs DAPS's exact output law N(a, V): K·|L⁻¹(m̂ − a)|²/N ~ χ²_N/N (mean 1, sd √(2/N) = 0.18
    for N = 64) and tr(L⁻¹ĈL⁻ᵀ)/N has mean 1 and sd ≈ √(2/(N(K−1))) = 0.016; bounds at ~5 sd. Both ways of running
    the Langevin steps: drawn in closed form in the SVD basis ("auto" here) and iterated one by one ("off")."""
    k = 128
    prior, op, _, y = gaussian_problem(SPECS[family], sigma_y=SIGMA_Y)
    solver = get_solver("daps", closed_form=closed_form, **DAPS_TEST)
    a, v = daps_moments(prior, op, y, solver.params)
    out = run_sample(solver, replicas(y, k), op, prior, seeds=range(k)).double().reshape(k, -1).numpy()
    mean_stat, var_stat, _ = whitened(out.mean(0), np.cov(out.T), a, v)
    assert 0.3 < k * mean_stat < 2.0, k * mean_stat
    assert abs(var_stat - 1) < 0.09, var_stat


def test_daps_hmc_samples_follow_their_closed_form():
    k = 128
    prior, op, _, y = gaussian_problem(SPECS["mask"], sigma_y=SIGMA_Y)
    solver = get_solver("daps", **dict(DAPS_TEST, mcmc="hmc", mcmc_steps=12, lr=1e-3, momentum=0.8))
    a, v = daps_moments(prior, op, y, solver.params)
    out = run_sample(solver, replicas(y, k), op, prior, seeds=range(k)).double().reshape(k, -1).numpy()
    mean_stat, var_stat, _ = whitened(out.mean(0), np.cov(out.T), a, v)
    assert 0.3 < k * mean_stat < 2.0, k * mean_stat
    assert abs(var_stat - 1) < 0.09, var_stat


@pytest.mark.parametrize("likelihood,closed_form", [("noise", "auto"), ("noise", "off"), ("official", "auto")])
def test_daps_likelihood_uses_the_measurement_noise(likelihood, closed_form):
    """Told σ_y = 0.05, DAPS samples with τ_eff = √(τ² + 2s²σ_y²) and the step lr·τ_eff/τ ("noise"), or with the fixed
    τ and lr ("official"): K = 128 samples vs the exact law of DAPS with those values (χ² bounds as above), on both
    Langevin paths; the values used are reported. "noise": τ = 1e-3, so τ_eff ≈ 2√2·σ_y (the true likelihood);
    "official": τ = 2√2·σ_y given, used as it is."""
    from restore.solvers.daps import effective_tau

    k = 128
    prior, op, _, y = gaussian_problem(SPECS["sr"], sigma_y=SIGMA_Y)
    tau = 1e-3 if likelihood == "noise" else TAU
    tau_eff = math.sqrt(tau**2 + 2 * 4 * SIGMA_Y**2)
    assert float(effective_tau(tau, 2.0, SIGMA_Y, torch.ones(1), likelihood)) == pytest.approx(
        tau_eff if likelihood == "noise" else tau, rel=1e-12)
    scale = tau_eff / tau if likelihood == "noise" else 1.0
    params = dict(DAPS_TEST, tau=tau, lr=1e-2 / scale, likelihood=likelihood, closed_form=closed_form)
    solver = get_solver("daps", **params)
    used = dict(solver.params, tau=tau_eff if likelihood == "noise" else tau, lr=1e-2)
    a, v = daps_moments(prior, op, y, used)
    out = run_sample(solver, replicas(y, k), op, prior, seeds=range(k), noise=SIGMA_Y).double().reshape(k, -1).numpy()
    mean_stat, var_stat, _ = whitened(out.mean(0), np.cov(out.T), a, v)
    assert 0.3 < k * mean_stat < 2.0, k * mean_stat
    assert abs(var_stat - 1) < 0.09, var_stat
    assert solver.reported["tau_used"] == pytest.approx(used["tau"], rel=1e-9)
    assert solver.reported["lr_used"] == pytest.approx(1e-2, rel=1e-9)
    # without noise both likelihoods are the official one: τ_eff = τ and the step is lr
    quiet = get_solver("daps", **params)
    run_sample(quiet, y, op, prior, seeds=[0])
    assert (quiet.reported["tau_used"], quiet.reported["lr_used"]) == (tau, params["lr"])


def test_daps_effective_tau_and_what_solve_reports():
    """τ_eff² = τ² + 2s²κσ_y² (s = 2, or 1 for phase retrieval; κ = 1/‖AᵀA‖ of a normalised operator); ``solve``
    puts the τ and the first step used into the result's parameters (the sidecar), beside the parameters given."""
    from restore.solvers.daps import effective_tau

    kappa = torch.tensor([1.0, 0.25])
    got = effective_tau(0.01, 2.0, 0.1, kappa)
    assert torch.allclose(got, torch.tensor([math.sqrt(1e-4 + 8 * 0.01), math.sqrt(1e-4 + 8 * 0.01 / 4)],
                                            dtype=torch.float64))
    assert float(effective_tau(0.01, 1.0, 0.1, torch.ones(1))) == pytest.approx(math.sqrt(1e-4 + 2 * 0.01))
    assert float(effective_tau(0.01, 2.0, 0.0, torch.ones(1))) == 0.01
    assert float(effective_tau(0.01, 2.0, 0.1, torch.ones(1), "official")) == 0.01
    prior, op, _, y = smoke_problem("denoise", sigma_y=0.1)
    result = solve(get_solver("daps", **SMOKE["daps"]), y, op, prior, seeds=[0], noise=0.1)
    tau_eff = math.sqrt(1e-4 + 8 * 0.01)
    assert result.params["tau"] == 0.01 and result.params["likelihood_used"] == "noise"  # auto on denoise
    assert result.params["tau_used"] == pytest.approx(tau_eff) and result.params["lr_used"] == pytest.approx(
        1e-4 * tau_eff / 0.01)
    official = solve(get_solver("daps", likelihood="official", **SMOKE["daps"]), y, op, prior, seeds=[0], noise=0.1)
    assert (official.params["tau_used"], official.params["lr_used"]) == (0.01, 1e-4)
    with pytest.raises(SolverError, match="parameter 'likelihood' must be one of auto, noise, official"):
        get_solver("daps", likelihood="exact")


LANGEVIN_SPECS = dict(SPECS, mri="mri:accel=4,center=0.25,pattern=random",
                      blur_sep="blur:kind=gaussian,size=5,std=1.0", sr4="sr:factor=4,kernel=bicubic")


@pytest.mark.parametrize("sigma,eta,steps", [(100.0, 1e-4, 100), (0.5, 1e-2, 20), (0.1, 5e-3, 7), (0.3, 0.04, 5)])
@pytest.mark.parametrize("family", list(LANGEVIN_SPECS))
def test_closed_form_langevin_matches_the_j_step_recursion(family, sigma, eta, steps):
    """The law SpectralLangevin draws from vs the J-step chain x ← x + η((x̂₀ − x)/σ² − a Aᵀ(Ax − ỹ)) + √(2η)ε
    propagated densely in float64 from x = x̂₀ (mean: J affine steps; covariance C ← TCTᵀ + 2ηI): equal to float32
    precision. The settings span a nearly frozen chain at σ = 100 (η/σ² = 1e-8: 1 − m must not round away), a mixed
    one, and chains that oscillate or diverge in the observed directions (ηh > 1 or > 2: m < 0, |m| > 1), where the
    closed form must do what the iteration does."""
    from operators.seeding import generators
    from restore.solvers.daps import SpectralLangevin

    shape = (1, 8, 8)
    op = operators.build(LANGEVIN_SPECS[family], shape, seeds=[3])
    n = math.prod(shape)
    a_mat, _ = dense_matrix(op)
    g = torch.Generator().manual_seed(1)
    x0hat = torch.randn((1, *shape), generator=g, dtype=torch.float64)
    y_pm1 = op.A(torch.randn((1, *shape), generator=g))
    a = 2.0 / 0.05**2
    spectral = SpectralLangevin(op, y_pm1, torch.tensor([a]))
    keep, towards, std = spectral.law(sigma, eta, steps)
    mean = op.V(op.Vt(x0hat.float()) * keep + spectral.aty * towards).double().reshape(-1).numpy()
    cov = np.stack([op.V(std**2 * op.Vt(e.reshape(1, *shape))).double().reshape(-1).numpy()
                    for e in torch.eye(n)], axis=1)
    # the dense chain (AᵀA from the dense operator: [Re; Im] rows for complex measurements give Re⟨·,·⟩)
    aty = op.A_adjoint(y_pm1).double().reshape(-1).numpy()
    hess = np.eye(n) / sigma**2 + a * a_mat.T @ a_mat
    t_mat = np.eye(n) - eta * hess
    b = x0hat.reshape(-1).numpy() / sigma**2 + a * aty
    m_ref, c_ref = x0hat.reshape(-1).numpy(), np.zeros((n, n))
    for _ in range(steps):
        m_ref, c_ref = t_mat @ m_ref + eta * b, t_mat @ c_ref @ t_mat.T + 2 * eta * np.eye(n)
    scale = max(1.0, float(np.abs(m_ref).max()))
    assert np.abs(mean - m_ref).max() < 2e-5 * scale, np.abs(mean - m_ref).max()
    assert np.abs(cov - c_ref).max() < 2e-5 * max(1.0, float(np.abs(c_ref).max())), np.abs(cov - c_ref).max()
    # one draw: x̂₀ → V(keep Vᴴx̂₀ + … + std Vᴴε) is real and finite, and with J = 1 it is the Langevin step itself
    gens = generators([0], "t")
    x = spectral.sample(x0hat.float(), sigma, eta, steps, gens)
    assert not x.is_complex() and bool(torch.isfinite(x).all())


def test_closed_form_langevin_one_step_is_the_langevin_step():
    """J = 1: the closed form computes x̂₀ + η·score(x̂₀) + √(2η)ε with the same ε as the iterated step."""
    prior, op, _, y = gaussian_problem(SPECS["sr"], sigma_y=SIGMA_Y)
    params = dict(annealing_steps=4, ode_steps=1, mcmc_steps=1, lr=1e-3)
    on = run_sample(get_solver("daps", closed_form="on", **params), y, op, prior, seeds=[5])
    off = run_sample(get_solver("daps", closed_form="off", **params), y, op, prior, seeds=[5])
    assert torch.allclose(on, off, atol=2e-5), (on - off).abs().max()


def test_closed_form_on_refuses_what_it_cannot_draw():
    prior, op, _, y = smoke_problem("blur-motion")
    with pytest.raises(SolverError, match="closed_form=on needs .* has no SVD; use closed_form=auto or off"):
        run_sample(get_solver("daps", closed_form="on", annealing_steps=1, ode_steps=1, mcmc_steps=2), y, op, prior,
                   seeds=[0])
    with pytest.raises(SolverError, match="parameter 'closed_form' must be one of auto, on, off"):
        get_solver("daps", closed_form="yes")


@pytest.mark.parametrize("family", ["sr", "phase", "hdr"])
def test_daps_one_step_matches_the_official_score(family):
    """One level, one Euler step, one Langevin step, replayed with the official [-1, 1] quantities: x = σ₀n,
    x̂₀ = x + (0.01 − σ₀)(x − D(x, σ₀))/σ₀, x₀ = x̂₀ − η∇_x Σ(A_off(x̂₀) − y_off)²/τ² + √(2η)ε, with A_off, y_off the
    official operator and measurement: for SR (linear) A_off(x) = A(x), y_off = 2y − A(1); for HDR clip(2x, −1, 1),
    y_off = 2y − 1; DAPS's phase retrieval takes [0, 1] data, so A_off(x) = |F pad((x+1)/2)| = ours, y_off = y."""
    from operators.seeding import generators
    from restore.solvers.base import randn_like_per_image

    prior, op, _, y = smoke_problem(family, sigma_y=0.02)
    # the official likelihood: τ = 0.01 whatever the measurement noise the solver is told
    solver = get_solver("daps", annealing_steps=1, ode_steps=1, mcmc_steps=1, sigma_max=2.0, likelihood="official")
    out = run_sample(solver, y, op, prior, seeds=[0], noise=0.02)
    gens = generators([0], "solver/daps/0")
    x = randn_like_per_image(torch.empty((1, *op.image_shape)), gens) * 2.0
    with torch.no_grad():
        x0hat = x + (0.01 - 2.0) * (x - prior.denoise(x, 2.0)) / 2.0
    if family == "sr":
        a_off, y_off = op.A, 2 * y - op.A(torch.ones_like(x))
    elif family == "hdr":
        a_off, y_off = (lambda v: (2 * v).clamp(-1, 1)), 2 * y - 1
    else:
        a_off, y_off = (lambda v: op.A((v + 1) / 2)), y
    xr = x0hat.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(((a_off(xr) - y_off) ** 2).sum(), xr)
    eta = 1e-4  # lr at k = 0
    expected = x0hat - eta * grad / 0.01**2 + math.sqrt(2 * eta) * randn_like_per_image(x, gens)
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("family", ["sr", "mask", "blur", "denoise"])
def test_daps_against_the_exact_posterior(family):
    """The DAPS law (closed form) vs the exact posterior, for the test settings and for the official DAPS-1K schedule
    (200 levels σ 100 → 0.1, 5 ODE steps, 100 Langevin steps; τ matched to the noise): the mean is within 0.35
    posterior standard deviations (RMS over whitened coordinates), the covariance over-dispersed by at most ×3 in
    variance and never under-dispersed by more than 5% (a property of DAPS, not of this code: see the module doc)."""
    prior, op, _, y = gaussian_problem(SPECS[family], sigma_y=SIGMA_Y)
    mean, cov = prior.posterior(y, op, SIGMA_Y)
    mean, cov = mean[0].reshape(-1).numpy(), cov[0].numpy()
    for params in (DAPS_TEST, DAPS_1K):
        a, v = daps_moments(prior, op, y, get_solver("daps", **params).params)
        mean_stat, var_stat, eig = whitened(a, v, mean, cov)
        assert math.sqrt(mean_stat) < 0.35, (params, mean_stat)
        assert 0.95 < eig.min() and eig.max() < 3.0, (params, eig.min(), eig.max())


def test_daps_per_pixel_mean_and_std_against_the_exact_posterior():
    """Per pixel, over K = 128 samples: |mean − exact mean| ≤ 0.35·posterior std + 5 Monte-Carlo standard errors, and
    std/exact std in [0.85, 1.8] (the over-dispersion of the closed-form DAPS law, ≤ 1.7 here, plus MC error)."""
    k = 128
    prior, op, _, y = gaussian_problem(SPECS["sr"], sigma_y=SIGMA_Y)
    mean, cov = prior.posterior(y, op, SIGMA_Y)
    pstd = cov[0].diagonal().sqrt().reshape(mean.shape[1:])
    out = run_sample(get_solver("daps", **DAPS_TEST), replicas(y, k), op, prior, seeds=range(k)).double()
    std = out.std(0)
    assert bool(((out.mean(0) - mean[0]).abs() <= 0.35 * pstd + 5 * std / math.sqrt(k)).all())
    ratio = std / pstd
    assert 0.85 < float(ratio.min()) and float(ratio.max()) < 1.8, (float(ratio.min()), float(ratio.max()))


# ---------------------------------------------------------------------------------------------------------------------
# RED-Diff on the Gaussian prior


def reddiff_noise(prior, op, y, params) -> float:
    """ρ at the end of the sweep (t = 0): ρ² = λ·w(σ₀)·σ₀·n_y/(v·s²·n_x), on the [0, 1] measurement scale."""
    sigma0 = float(prior.sigmas[0])
    n_x, n_y = math.prod(op.image_shape), float(_measured_entries(op, y)[0])
    w = WEIGHTINGS[params["weighting"]](sigma0)
    return math.sqrt(params["grad_term_weight"] * w * sigma0 * n_y
                     / (params["obs_weight"] * residual_scale(op) ** 2 * n_x))


def reddiff_mean_of_runs(solver, prior, op, y, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = run_sample(solver, replicas(y, k), op, prior, seeds=range(k)).double()
    return out.mean(0), out.std(0) / math.sqrt(k)


@pytest.mark.parametrize("family", ["sr", "mask", "blur", "denoise"])
def test_reddiff_reaches_the_exact_map_without_noise(family):
    """Noise-free data, the official settings (1000 steps, lr 0.1, λ 0.25): the mean of K = 48 runs is the exact
    posterior mean (= MAP) within 5 Monte-Carlo standard errors + 0.01 (on [-1, 1], prior std 0.5)."""
    k = 48
    prior, op, _, y = gaussian_problem(SPECS[family], sigma_y=0.0)
    exact, _ = prior.posterior(y, op, 0.0)
    mean, se = reddiff_mean_of_runs(get_solver("reddiff"), prior, op, y, k)
    err = (mean - exact[0]).abs()
    assert bool((err <= 5 * se + 0.01).all()), float((err - 5 * se).max())


@pytest.mark.parametrize("family,params", [("sr", {}), ("mask", {}), ("denoise", {}),
                                           ("denoise", dict(grad_term_weight=1.0, weighting="sqrt"))])
def test_reddiff_noisy_data_reaches_its_fixed_point(family, params):
    """σ_y = 0.05: the mean of K = 48 runs is the MAP for the prior N(m, Σ + σ₀² I) and the noise ρ(σ₀) derived in the
    module docstring (within 5 MC standard errors + 0.01) — not the posterior mean for σ_y."""
    k = 48
    prior, op, _, y = gaussian_problem(SPECS[family], sigma_y=SIGMA_Y)
    solver = get_solver("reddiff", **params)
    rho = reddiff_noise(prior, op, y, solver.params)
    target = torch.from_numpy(gaussian_map(prior, op, y, rho, float(prior.sigmas[0]) ** 2)).reshape(op.image_shape)
    mean, se = reddiff_mean_of_runs(solver, prior, op, y, k)
    err = (mean - target).abs()
    assert bool((err <= 5 * se + 0.01).all()), float((err - 5 * se).max())
    if family == "denoise" and not params:  # the fixed point is far from the σ_y posterior mean: the test can tell
        exact, cov = prior.posterior(y, op, SIGMA_Y)
        assert float((target - exact[0]).abs().mean()) > 4 * float((mean - target).abs().mean())


def test_reddiff_gradient_scale_matches_the_official_loss():
    """One step from a known μ: our closed-form gradient equals autograd of the official loss
    λ·w_t·mean((ε̂−ε)·μ) + mean((ỹ − H(μ))²)/2 with the official [-1, 1] quantities ỹ = 2y − A(1), H(μ) = A(μ)
    (A linear) — checked through the first Adam step, whose size is lr·sign(g) when m = v = 0."""
    prior, op, _, y = gaussian_problem(SPECS["sr"], sigma_y=SIGMA_Y)
    solver = get_solver("reddiff", steps=1, lr=1e-3)
    out = run_sample(solver, y, op, prior, seeds=[0])
    mu0 = solver._initialise(y, op)
    # replay the official loss with the same ε (the first draw of the solver's stream)
    from operators.seeding import generators
    from restore.solvers.base import randn_like_per_image

    eps = randn_like_per_image(mu0, generators([0], "solver/reddiff/0"))
    t = 0  # steps = 1: the single timestep is ⌊T/1⌋·0 = 0
    a = float(prior.alphas_cumprod[t])
    mu = mu0.clone().requires_grad_(True)
    x_t = math.sqrt(a) * mu + math.sqrt(1 - a) * eps
    with torch.no_grad():
        eps_hat, _ = prior.model_output(x_t, torch.tensor([float(t)]))
    y_official = 2 * y - op.A(torch.ones_like(mu0))
    loss = 0.25 * math.sqrt((1 - a) / a) * ((eps_hat - eps).detach() * mu).mean() \
        + ((y_official - op.A(mu)) ** 2).mean() / 2
    (g,) = torch.autograd.grad(loss, mu)
    expected = mu0 - 1e-3 * g / (g.abs() + 1e-8)
    assert torch.allclose(out, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# smoke tests on a tiny random UNet: every operator family, shapes, determinism, batch independence

SMOKE = {"daps": dict(annealing_steps=2, ode_steps=1, mcmc_steps=3, sigma_max=2.0), "reddiff": dict(steps=3)}


@pytest.mark.parametrize("family", list(SMOKE_SPECS))
@pytest.mark.parametrize("name", ["daps", "reddiff"])
def test_smoke_every_family(name, family):
    prior, op, _, y = smoke_problem(family, batch=2, sigma_y=0.02)
    solver = get_solver(name, **SMOKE[name])
    both = run_sample(solver, y, op, prior, seeds=[3, 4])
    assert both.shape == (2, *op.image_shape) and bool(torch.isfinite(both).all())
    again = run_sample(solver, y, op, prior, seeds=[3, 4])
    assert torch.equal(both, again)                                    # same seeds → identical
    # image 1 does not depend on image 0: bit for bit when image 0 changes (same batch size, same arithmetic) ...
    swapped = run_sample(solver, torch.cat([y[:1].flip(-1), y[1:]]), op, prior, seeds=[7, 4])
    assert torch.equal(swapped[1], both[1])
    # ... and up to float rounding when it runs alone (a batch of 1 takes other convolution kernels: the network
    # differs by ~1e-6, which HDR's clipping can turn into 1e-3 on a few pixels)
    alone = run_sample(solver, y[1:2], op, prior, seeds=[4])
    assert torch.allclose(alone[0], both[1], atol=1e-5 if family != "hdr" else 2e-3, rtol=1e-5)
    other = run_sample(solver, y[1:2], op, prior, seeds=[5])
    assert not torch.allclose(alone, other)                            # the seed matters


@pytest.mark.parametrize("name,nfe", [("daps", 2 * 1), ("reddiff", 3)])
def test_solve_counts_network_evaluations(name, nfe):
    prior, op, _, y = smoke_problem("sr", batch=1)
    result = solve(get_solver(name, **SMOKE[name]), y, op, prior, seeds=[0], samples=2)
    assert result.cost.nfe == 2 * nfe and result.std is not None and result.failed == [None]
    assert result.x.shape == (1, *op.image_shape) and 0 <= float(result.x.min()) <= float(result.x.max()) <= 1


def test_daps_step_counts_and_schedule():
    """NFE = N·M; the annealing levels are the first N of N+1 poly-7 points (σ_min itself is not visited); the
    Langevin loop costs one A and one Aᵀ per step for a linear operator (plus one A(1) for ỹ = 2y − A(1)); drawn in
    closed form it costs Vᴴx̂₀, Vᴴε and V per level (plus A(1), Aᵀỹ and its Vᴴ once)."""
    prior, op, _, y = smoke_problem("mask-random")
    params = dict(annealing_steps=3, ode_steps=2, mcmc_steps=4)
    result = solve(get_solver("daps", closed_form="off", **params), y, op, prior, seeds=[0])
    assert result.cost.nfe == 6 and result.cost.operator_evals == 3 * 4 * 2 + 1
    result = solve(get_solver("daps", **params), y, op, prior, seeds=[0])
    assert result.cost.nfe == 6 and result.cost.operator_evals == 3 * 3 + 3
    grid = poly_sigmas(100.0, 0.1, 201)
    assert grid[0] == pytest.approx(100.0) and grid[-1] == pytest.approx(0.1) and grid[-2] > 0.1
    assert all(a > b for a, b in zip(grid, grid[1:]))


def test_presets():
    daps = get_solver("daps", preset="daps-1k").params
    assert (daps["annealing_steps"], daps["ode_steps"], daps["mcmc_steps"], daps["tau"]) == (200, 5, 100, 0.01)
    assert get_solver("daps", preset="daps-100").params["annealing_steps"] * \
        get_solver("daps", preset="daps-100").params["ode_steps"] == 100
    assert get_solver("daps", preset="inpaint-box").params["lr"] == 5e-5
    assert get_solver("daps", preset="hdr").params["lr"] == 2e-5
    hmc = get_solver("daps", preset="sr4-hmc").params
    assert (hmc["mcmc"], hmc["mcmc_steps"], hmc["lr"], hmc["momentum"]) == ("hmc", 12, 1.04e-4, 0.90)
    latent = get_solver("daps", preset="latent-phase-retrieval").params
    assert (latent["sigma_max"], latent["ode_sigma_min"], latent["annealing_steps"], latent["mcmc_steps"]) == \
        (10.0, 0.001, 50, 65)
    red = get_solver("reddiff").params
    assert (red["steps"], red["lr"], red["grad_term_weight"], red["weighting"]) == (1000, 0.1, 0.25, "linear")
    assert get_solver("reddiff", preset="fast").params["lr"] == 0.5


# ---------------------------------------------------------------------------------------------------------------------
# latent priors


def tiny_latent_prior():
    """A LatentPrior with random weights: ``SmallAutoencoder`` ×2 (3×16×16 images ↔ 4×8×8 latents) and a tiny ADM
    UNet on the latents."""
    from priors.adm import ADMConfig
    from priors.base import PriorCard
    from priors.latent import AutoencoderConfig, LatentPrior, SmallAutoencoder
    from tests.solver_testing import adm_prior

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        autoencoder = SmallAutoencoder(AutoencoderConfig(in_channels=3, latent_channels=4, base_channels=32,
                                                         channel_mult="1,2", num_res_blocks=1)).eval()
    net = adm_prior(ADMConfig(image_size=8, in_channels=4, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                              attention_resolutions="", num_head_channels=32, use_scale_shift_norm=True)).net
    card = PriorCard(name="tiny-latent", image_size=16, channels=3, domain="random weights (tests)",
                     schedule="ldm-linear")
    return LatentPrior(net, card, autoencoder).eval()


def test_latent_daps_runs_through_the_decoder():
    _, op, _, y = smoke_problem("mask-box", batch=2)
    prior = tiny_latent_prior()
    assert get_solver("daps").auto_preset(op, prior) == "latent-inpaint-box"
    assert get_solver("daps").auto_preset(op) == "inpaint-box"
    solver = get_solver("daps", preset="latent-inpaint-box", annealing_steps=2, ode_steps=2, mcmc_steps=3)
    result = solve(solver, y, op, prior, seeds=[0, 1])
    # 2 levels × 2 ODE steps; A once per HMC step (autograd through the decoder), no Aᵀ
    assert result.x.shape == y.shape and result.cost.nfe == 4 and result.cost.operator_evals == 2 * 3
    assert result.failed == [None, None]
    alone = solve(solver, y[1:2], op, prior, seeds=[1])
    assert torch.allclose(alone.x[0], result.x[1], atol=1e-5)
    # the latent path uses the measurement noise too when asked (κ = 1: no normalisation through a decoder); "auto"
    # keeps the official τ on inpainting
    assert solve(solver, y, op, prior, seeds=[0, 1], noise=0.1).params["tau_used"] == solver.params["tau"]
    noise_solver = get_solver("daps", preset="latent-inpaint-box", annealing_steps=2, ode_steps=2, mcmc_steps=3,
                              likelihood="noise")
    noisy = solve(noise_solver, y, op, prior, seeds=[0, 1], noise=0.1)
    assert noisy.params["tau_used"] == pytest.approx(math.sqrt(solver.params["tau"] ** 2 + 8 * 0.01))


def test_reddiff_refuses_latent_priors():
    _, op, _, y = smoke_problem("sr")
    with pytest.raises(SolverError, match="pixel prior"):
        solve(get_solver("reddiff", steps=2), y, op, tiny_latent_prior(), seeds=[0])


# ---------------------------------------------------------------------------------------------------------------------
# refusals: one sentence each


@pytest.mark.parametrize("name,kwargs,match", [
    ("daps", dict(mcmc="mala"), "parameter 'mcmc' must be one of langevin, hmc"),
    ("daps", dict(sigma_min=0.001), "sigma_max > sigma_min > ode_sigma_min"),
    ("daps", dict(annealing_steps=0), "at least 1"),
    ("daps", dict(lr=-1.0), "positive"),
    ("daps", dict(guidance=1.0), "has no parameter 'guidance'"),
    ("reddiff", dict(weighting="cubic"), "parameter 'weighting' must be one of"),
    ("reddiff", dict(steps=0), "at least 1"),
])
def test_bad_parameters_are_refused(name, kwargs, match):
    with pytest.raises(SolverError, match=match) as info:
        get_solver(name, **kwargs)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_reddiff_refuses_more_steps_than_timesteps():
    prior, op, _, y = smoke_problem("denoise")
    with pytest.raises(SolverError, match="at most the prior's 1000 timesteps"):
        solve(get_solver("reddiff", steps=1001), y, op, prior, seeds=[0])


def test_unknown_preset_is_refused():
    with pytest.raises(SolverError, match="no preset 'daps-4k'"):
        get_solver("daps", preset="daps-4k")


# ---------------------------------------------------------------------------------------------------------------------
# overhead on the cpu64 random UNet (64×64). Slow: run with RESTORE_BENCH=1 (prints, asserts nothing).
# ratio = wall time / (NFE × one bare network evaluation, the median of 10 timed just before); since the machine is
# shared, the run also times itself: the time inside the network (forward hooks) and inside the operator (A, Aᵀ,
# A⁺), the rest being the solver's own arithmetic and random draws.


class _Timed:
    """Accumulates the wall time spent in the wrapped callables."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


@pytest.mark.skipif(not os.environ.get("RESTORE_BENCH"), reason="timing benchmark: set RESTORE_BENCH=1")
@pytest.mark.parametrize("name,preset,params,spec", [
    ("reddiff", "fast", dict(steps=40), "sr4"),
    ("reddiff", "fast", dict(steps=40), "inpaint-random"),
    ("reddiff", "fast", dict(steps=40), "phase-retrieval"),
    ("daps", "sr4", dict(annealing_steps=8), "sr4"),
    ("daps", "inpaint-random", dict(annealing_steps=8), "inpaint-random"),
    ("daps", "deblur-gauss", dict(annealing_steps=8), "deblur-gauss"),
    ("daps", "phase-retrieval", dict(annealing_steps=8), "phase-retrieval"),
])
def test_overhead_cpu64(name, preset, params, spec):
    import operators
    from tests.solver_testing import cpu64_prior

    prior = cpu64_prior()
    op = operators.build(spec, (3, 64, 64), seeds=[0])
    x = torch.rand(1, 3, 64, 64)
    y = operators.measure(op, x, noise=0.025, seeds=[0])
    t_in = torch.tensor([500.0])
    with torch.no_grad():
        for _ in range(3):
            prior.net(x * 2 - 1, t_in)
        times = []
        for _ in range(10):
            start = time.perf_counter()
            prior.net(x * 2 - 1, t_in)
            times.append(time.perf_counter() - start)
        bare = float(np.median(times))
    in_net, in_op = _Timed(), _Timed()
    marks = []
    pre = prior.net.register_forward_pre_hook(lambda *a: marks.append(time.perf_counter()))
    post = prior.net.register_forward_hook(lambda *a: setattr(in_net, "seconds",
                                                              in_net.seconds + time.perf_counter() - marks[-1]))
    for method in ("A", "A_adjoint", "A_pinv"):
        if hasattr(op, method):
            setattr(op, method, in_op.wrap(getattr(op, method)))
    try:
        result = solve(get_solver(name, preset=preset, **params), y, op, prior, seeds=[0])
    finally:
        pre.remove()
        post.remove()
    wall, nfe = result.cost.seconds, result.cost.nfe
    rest = wall - in_net.seconds - in_op.seconds
    print(f"\n{name} {preset} on {spec}: {nfe} NFE, {result.cost.operator_evals} operator evals; wall {wall:.2f} s = "
          f"network {in_net.seconds:.2f} + operator {in_op.seconds:.2f} + solver {rest:.2f}; bare net "
          f"{bare * 1e3:.1f} ms; wall/(NFE·bare) {wall / (nfe * bare):.3f}; wall/network {wall / in_net.seconds:.3f}; "
          f"(network+solver)/network {(in_net.seconds + rest) / in_net.seconds:.3f}")


def test_daps_step_count_presets_take_the_task_s_official_mcmc_settings():
    """DAPS-100 / DAPS-1K pair their step counts with the task's official Langevin settings (motion deblur: lr 5e-5,
    which keeps the Langevin step stable where the default 1e-4 is not); an explicit lr wins; a task without
    official settings (MRI) keeps 100 steps at 1e-4. The solver's own parameters never change while sampling: what
    it used is reported (``Result.params`` shows ``params`` updated by ``reported``)."""

    def used(s):
        return dict(s.params, **s.reported)

    prior = tiny_unet_prior(channels=3, size=16)
    motion = operators.build("blur:kind=motion,size=5,intensity=0.5", (3, 16, 16), seeds=[0])
    y = operators.measure(motion, torch.rand(1, 3, 16, 16), 0.0, [0])
    solver = get_solver("daps", preset="daps-100", annealing_steps=1, ode_steps=1)
    run_sample(solver, y, motion, prior, seeds=[0])
    assert (used(solver)["lr"], used(solver)["mcmc_steps"]) == (5e-5, 100) and solver.params["lr"] == 1e-4
    explicit = get_solver("daps", preset="daps-100", annealing_steps=1, ode_steps=1, lr=2e-5, mcmc_steps=3)
    run_sample(explicit, y, motion, prior, seeds=[0])
    assert (used(explicit)["lr"], used(explicit)["mcmc_steps"]) == (2e-5, 3)
    grey = tiny_unet_prior(channels=1, size=16)
    mri = operators.build("mri:accel=4,center=0.08", (1, 16, 16), seeds=[0])
    y_mri = operators.measure(mri, torch.rand(1, 1, 16, 16), 0.0, [0])
    solver2 = get_solver("daps", preset="daps-100", annealing_steps=1, ode_steps=1)
    run_sample(solver2, y, motion, prior, seeds=[0])
    run_sample(solver2, y_mri, mri, grey, seeds=[0])  # reused on another task: back to the preset's values
    assert (used(solver2)["lr"], used(solver2)["mcmc_steps"]) == (1e-4, 100)
    plain = get_solver("daps", annealing_steps=1, ode_steps=1)  # no preset: the defaults, whatever the task
    run_sample(plain, y, motion, prior, seeds=[0])
    assert used(plain)["lr"] == 1e-4


def test_daps_auto_likelihood_is_the_noise_one_on_denoise_and_the_official_tau_elsewhere():
    """likelihood="auto" (the default): on the identity operator the fixed τ would return the noisy input, so the noise
    likelihood is used; on operators with a null space the official τ (measured better there; see daps.py)."""
    import operators
    from restore.solvers.daps import likelihood_for

    for spec, channels, expected in (("denoise", 3, "noise"), ("sr4", 3, "official"), ("inpaint-random", 3, "official"),
                                     ("mri-4x", 1, "official"), ("deblur-gauss", 3, "official")):
        op = operators.build(spec, (channels, 16, 16), seeds=[0])
        assert likelihood_for(op, "auto") == expected
        assert likelihood_for(op, "noise") == "noise" and likelihood_for(op, "official") == "official"
    prior, op, _, y = smoke_problem("sr", sigma_y=0.05)
    result = solve(get_solver("daps", **SMOKE["daps"]), y, op, prior, seeds=[0], noise=0.05)
    assert result.params["likelihood_used"] == "official" and result.params["tau_used"] == 0.01
