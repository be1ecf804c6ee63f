"""DDRM: faithfulness (a transcription of the official ``efficient_generalized_steps`` loop), correctness against the
exact posterior of the Gaussian prior, the low-start grid, and smoke tests of the operator families with an SVD.

Monte-Carlo tolerances as in test_solvers_dps_ddnm.py: errors relative to ‖m_post − μ_prior‖, K = 64 on 1×8×8."""

import numpy as np
import pytest
import torch

from operators.seeding import generators
from restore.solvers import SolverError, get_solver, solve
from restore.solvers.base import randn_like_per_image
from restore.solvers.ddrm import ddrm_timesteps
from restore.solvers.dps import alphas_cumprod64
from solver_testing import GAUSSIAN_SPECS, SMOKE_SPECS, gaussian_problem, run_sample, smoke_problem

K = 64
pytestmark = pytest.mark.usefixtures("one_thread")


def official_ddrm_diagonal(prior, y_pm1, s, sigma_0, eta, eta_b, steps, gens):
    """``efficient_generalized_steps`` for a diagonal operator (V = U = I, singular values s ≥ 0 per pixel: masks,
    denoising) on flattened vectors, with its own index bookkeeping (the kept singular values first, the null space
    after, boolean assignments per case). Noise is drawn per image from ``gens`` in the order the solver draws it
    (one image-shaped draw at the start and one per step, shared by the three cases)."""
    b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    acp = torch.cumprod(1 - torch.cat([torch.zeros(1, dtype=b.dtype), b]), 0)  # compute_alpha: index t + 1
    shape = y_pm1.shape
    flat_s = s.reshape(-1)
    order = torch.cat([torch.nonzero(flat_s > 0).flatten(), torch.nonzero(flat_s == 0).flatten()])
    singulars = flat_s[order][: int((flat_s > 0).sum())]
    Vt = lambda v: v.reshape(1, -1)[:, order]  # noqa: E731
    def V(c):  # noqa: E306
        out = torch.empty_like(c)
        out[:, order] = c
        return out.reshape(shape)
    U_t_y = Vt(y_pm1)[:, : len(singulars)]
    Sig_inv_U_t_y = U_t_y / singulars
    seq = list(range(0, 1000, 1000 // steps))
    largest_sigma = float(((1 - acp[seq[-1] + 1]) / acp[seq[-1] + 1]).sqrt())
    z = Vt(randn_like_per_image(torch.empty(shape), gens).double())
    large = torch.zeros(z.shape[1], dtype=torch.bool)
    large[: len(singulars)] = singulars * largest_sigma > sigma_0
    inv = torch.zeros(z.shape[1], dtype=torch.float64)
    inv[large] = sigma_0 / singulars[large[: len(singulars)]]
    init = torch.zeros_like(z)
    init[:, large] = U_t_y[:, large[: len(singulars)]] / singulars[large[: len(singulars)]]
    init = (init + (largest_sigma**2 - inv**2).clamp_min(0).sqrt() * z) / largest_sigma
    x = V(init)
    for i, j in zip(reversed(seq), reversed([-1] + seq[:-1])):
        at, at_next = float(acp[i + 1]), float(acp[j + 1])
        et = prior.net(x.float(), torch.tensor([float(i)])).double()
        x0_t = (x - et * (1 - at) ** 0.5) / at**0.5
        sigma_next = ((1 - at_next) / at_next) ** 0.5
        V_t_x0 = Vt(x0_t)
        SVt_x0 = V_t_x0[:, : len(singulars)] * singulars
        falses = torch.zeros(V_t_x0.shape[1] - len(singulars), dtype=torch.bool)
        before_lite = singulars * sigma_next > sigma_0
        after_lite = singulars * sigma_next < sigma_0
        before, after = torch.hstack((before_lite, falses)), torch.hstack((after_lite, falses))
        std_C = sigma_next * eta
        tilde_C = (sigma_next**2 - std_C**2) ** 0.5
        diff_B = (sigma_next**2 - sigma_0**2 / singulars[before_lite] ** 2 * eta_b**2).sqrt()
        n = Vt(randn_like_per_image(torch.empty(shape), gens).double())
        nxt = V_t_x0 + tilde_C * Vt(et) + std_C * n
        nxt[:, after] = V_t_x0[:, after] + tilde_C * ((U_t_y - SVt_x0) / sigma_0)[:, after_lite] + std_C * n[:, after]
        nxt[:, before] = Sig_inv_U_t_y[:, before_lite] * eta_b + (1 - eta_b) * V_t_x0[:, before] + diff_B * n[:, before]
        x = at_next**0.5 * V(nxt)
    return x


@pytest.mark.parametrize("spec", ["mask:kind=random,fraction=0.5", "denoise"])
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_ddrm_matches_official_loop(spec, sigma):
    prior, op, _, y = gaussian_problem(spec, sigma_y=sigma, seed=2)
    ours = run_sample(get_solver("ddrm"), y, op, prior, [7], noise=sigma)
    s = op.singulars().double().expand(1, *op.image_shape)
    y_pm1 = 2 * y.double() - op.A(torch.ones(1, *op.image_shape)).double()
    ref = official_ddrm_diagonal(prior, y_pm1, s, 2 * sigma, 0.85, 1.0, 20, generators([7], "solver/ddrm/0"))
    assert torch.allclose(ours.double(), ref, atol=2e-5), (ours - ref).abs().max()


def test_timesteps():
    ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    assert ddrm_timesteps(ac, 20) == list(range(0, 1000, 50))            # the official seq
    assert ddrm_timesteps(ac, 1000) == list(range(1000))
    low = ddrm_timesteps(ac, 10, sigma_start=2.0)
    sig = np.sqrt((1 - ac) / ac)
    assert low[0] == 0 and len(low) == 10 and sig[low[-1]] <= 2.0 < sig[low[-1] + 1]
    with pytest.raises(SolverError, match="sigma_start"):
        ddrm_timesteps(ac, 50, sigma_start=0.05)


# ---------------------------------------------------------------------------------------------------------------------
# the exact Gaussian posterior (1×8×8)


def posterior_error(x, prior, op, y, sigma_y):
    mean, cov = prior.posterior(y, op, sigma_y)
    m = x.double().mean(0, keepdim=True)
    scale = (mean - prior.mean_value).norm()
    mc = float((cov[0].diagonal().clamp_min(0).sum() / x.shape[0]).sqrt() / scale)
    spread = float((x.double().var(0).sum() / cov[0].diagonal().clamp_min(1e-300).sum()).sqrt())
    return float((m - mean).norm() / scale), mc, spread


def many(y, k=K):
    return y.expand(k, *y.shape[1:]).clone()


@pytest.mark.parametrize("name", list(GAUSSIAN_SPECS))
def test_noise_free_is_nearly_consistent_and_near_the_posterior(name):
    prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS[name], sigma_y=0.0)
    x = run_sample(get_solver("ddrm", rcond=1e-6, steps=50), many(y), op, prior, range(K))
    # the official last step returns x₀|t from t = 0 on every mode (the strict s σ_{t−1} > σ_y fails at σ = 0), so
    # consistency holds up to the network's last correction: measured 0.3–0.8 % of ‖y‖
    res = (op.A((x + 1) / 2) - y).reshape(K, -1).norm(dim=1) / y.norm()
    assert float(res.max()) < 0.015
    err, mc, spread = posterior_error(x, prior, op, y, 0.0)
    # measured: err 0.07 (sr, MC 0.07), 0.16 (mask, MC 0.06: DDRM's per-mode q is not the exact posterior where
    # the prior correlates observed and missing pixels), 0.002 (blur, denoise: A is invertible, the posterior a point)
    assert err < 0.25, (err, mc)


@pytest.mark.parametrize("name", list(GAUSSIAN_SPECS))
def test_noisy_moves_to_the_posterior_mean(name):
    sigma = 0.025
    prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS[name], sigma_y=sigma)
    x = run_sample(get_solver("ddrm", steps=50), many(y), op, prior, range(K), noise=sigma)
    err, mc, spread = posterior_error(x, prior, op, y, sigma)
    # DDRM is approximate: measured err 0.02 (denoise), 0.07 (sr), 0.17 (mask), 0.19 (blur) with MC 0.01–0.08;
    # spread 0.55–1.08 of the posterior's
    assert err < 0.3, err
    assert 0.4 < spread < 1.3, spread
    if name == "blur":  # ignoring the noise (σ_y = 0: hard consistency) amplifies it: measured err 11.7
        hard = run_sample(get_solver("ddrm", steps=50, sigma_y=0.0), many(y, 16), op, prior, range(16), noise=sigma)
        assert posterior_error(hard, prior, op, y, sigma)[0] > 10 * err


def test_low_start_keeps_the_data():
    """Starting at σ = 2 (on [-1, 1]) from p(x_T | y): 10 network calls, and nearly consistent."""
    prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS["sr"], sigma_y=0.0)
    res = solve(get_solver("ddrm", preset="low-start", steps=10), many(y, 8), op, prior, seeds=list(range(8)))
    assert res.cost.nfe == 10
    x = run_sample(get_solver("ddrm", preset="low-start", steps=10, rcond=1e-6), many(y, 8), op, prior, range(8))
    assert float((op.A((x + 1) / 2) - y).norm() / y.norm()) < 0.015


def test_mri_preset_follows_the_task_and_moves_to_the_posterior_mean():
    """MRI takes the ``mri`` preset (100 steps from σ = 2, η = 1: chosen on training slices, no official setting),
    other tasks the official default; with η = 1 it still samples near the exact posterior of the Gaussian prior on
    undersampled k-space (complex Fourier basis, σ_y = 0.025)."""
    import operators

    solver = get_solver("ddrm")
    mri = operators.build("mri:accel=4,center=0.08,pattern=random", (1, 16, 16), seeds=[0])
    sr = operators.build("sr:factor=2,kernel=bicubic", (1, 16, 16), seeds=[0])
    assert solver.auto_preset(mri) == "mri" and solver.auto_preset(sr) == "default"
    p = get_solver("ddrm", preset="mri").params
    assert (p["steps"], p["sigma_start"], p["eta"], p["eta_b"]) == (100, 2.0, 1.0, 1.0)
    sigma = 0.025
    prior, op, _, y = gaussian_problem("mri:accel=2,center=0.25,pattern=random", sigma_y=sigma)
    x = run_sample(get_solver("ddrm", preset="mri", steps=50), many(y), op, prior, range(K), noise=sigma)
    err, mc, spread = posterior_error(x, prior, op, y, sigma)
    # measured: err 0.047 (MC 0.052; the official η = 0.85 from T 0.037), spread 0.73 of the posterior's (0.84)
    assert err < 0.15, (err, mc)
    assert 0.5 < spread < 1.1, spread


# ---------------------------------------------------------------------------------------------------------------------
# smoke: every family with an SVD on a tiny random UNet; refusals elsewhere

REFUSED = {"phase", "hdr", "ct", "blur-motion"}


@pytest.mark.parametrize("family", list(SMOKE_SPECS))
def test_smoke_every_family(family):
    prior, op, x_true, y = smoke_problem(family, batch=2, sigma_y=0.01)
    if family in REFUSED:
        with pytest.raises(SolverError, match="ddrm"):
            solve(get_solver("ddrm", steps=4), y, op, prior, seeds=[0, 1], noise=0.01)
        return
    a = run_sample(get_solver("ddrm", steps=4), y, op, prior, [0, 1], noise=0.01)
    assert a.shape == x_true.shape and bool(torch.isfinite(a).all())
    assert torch.equal(a, run_sample(get_solver("ddrm", steps=4), y, op, prior, [0, 1], noise=0.01))
    alone = run_sample(get_solver("ddrm", steps=4), y[1:], op, prior, [1], noise=0.01)
    assert torch.allclose(alone, a[1:], rtol=1e-5, atol=1e-3), (alone - a[1:]).abs().max()


# ---------------------------------------------------------------------------------------------------------------------
# deepinv's DDRM on identical noise


@pytest.mark.parametrize("spec", ["mask:kind=random,fraction=0.5", "sr:factor=2,kernel=average"])
def test_equals_deepinv_on_identical_noise(spec):
    """deepinv's ``DDRM`` is the same algorithm written on [0, 1] with a VE noise grid, except that it draws every
    noise as z/√2 (its ``torch.randn_like(...) / np.sqrt(2.0)``): std ησ/√2 instead of the paper's ησ, a lower
    sampling temperature. Given our grid (σ̄ of our timesteps, halved to [0, 1], then 0), our noise draws times √2
    (cancelling its /√2) and our prior as its denoiser, it gives our chain: its last denoiser input is our output
    (it adds one denoising at σ = 0). Measured max difference 2.5e-6 (mask), 4.8e-6 (block-mean SR)."""
    dinv = pytest.importorskip("deepinv")
    from test_solver_diffpir import deepinv_pieces

    sigma = 0.05
    prior, op, _, y = gaussian_problem(spec, sigma_y=sigma, seed=4)
    ours = run_sample(get_solver("ddrm", rcond=0.0), y, op, prior, [6], noise=sigma)
    _, denoiser, physics = deepinv_pieces(prior, op, sigma)
    ac = alphas_cumprod64(prior)
    levels = [float(np.sqrt((1 - ac[t]) / ac[t])) / 2 for t in reversed(ddrm_timesteps(ac, 20))] + [0.0]
    gens = generators([6], "solver/ddrm/0")
    seen = []

    def draw(x, *args, **kwargs):  # our spectral noise Vᵀn, times √2
        n = randn_like_per_image(torch.empty(1, *op.image_shape), gens)
        return op.Vt(n).reshape(x.shape).to(x.dtype) * 2**0.5

    def record(x01, sigma01):
        seen.append(x01.clone())
        return denoiser(x01, sigma01)

    original = torch.randn_like
    torch.randn_like = draw
    try:
        with torch.no_grad():
            dinv.sampling.DDRM(record, sigmas=np.array(levels), eta=0.85, etab=1.0)(y, physics)
    finally:
        torch.randn_like = original
    diff = float((2 * seen[-1] - 1 - ours).abs().max())
    assert diff < 5e-5, diff
