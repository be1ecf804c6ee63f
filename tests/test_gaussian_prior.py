"""The Gaussian oracle prior: its denoiser, both views of it, its samples and its exact posteriors, each against an
independent computation (dense numpy DFT matrices, the information form of the posterior)."""

import numpy as np
import pytest
import torch

import operators
from priors.gaussian import GaussianPrior, dense_matrix


def dense_sigma(h: int, w: int, c: int, alpha: float, scale: float, eps: float) -> np.ndarray:
    """Σ = Fᴴ diag(P) F from numpy's DFT matrices (independent of priors.gaussian's FFT code), block-diagonal over
    channels, for the flattened (C, H, W) pixel order."""
    fh = np.fft.fft(np.eye(h), norm="ortho")
    fw = np.fft.fft(np.eye(w), norm="ortho")
    f2 = np.kron(fh, fw)  # 2-D orthonormal DFT on row-major (H, W)
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    p = (eps + ky[:, None] ** 2 + kx[None, :] ** 2) ** (-alpha / 2)
    p = p * scale**2 * h * w / p.sum()
    sigma = (f2.conj().T @ np.diag(p.reshape(-1)) @ f2).real
    return np.kron(np.eye(c), sigma)


SHAPES = [(1, 4, 4), (2, 4, 6)]


@pytest.mark.parametrize("shape", SHAPES)
def test_covariance_matches_dense_dft(shape):
    prior = GaussianPrior(shape, mean=0.1, alpha=2.5, scale=0.4, eps=0.5)
    ref = dense_sigma(shape[1], shape[2], shape[0], 2.5, 0.4, 0.5)
    np.testing.assert_allclose(prior.covariance(), ref, atol=1e-12)
    assert np.allclose(np.diag(ref), 0.4**2)  # pixel std = scale


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigma", [0.02, 0.3, 2.0, 30.0])
def test_denoiser_is_the_wiener_filter(shape, sigma):
    mu = -0.2
    prior = GaussianPrior(shape, mean=mu, alpha=2.0, scale=0.5)
    sig = dense_sigma(shape[1], shape[2], shape[0], 2.0, 0.5, 1.0)
    g = torch.Generator().manual_seed(1)
    x = (prior.sample(3, g) + sigma * torch.randn((3, *shape), generator=g))
    # D(x) = μ + Σ(Σ + σ²I)⁻¹(x − μ), dense
    xv = x.double().reshape(3, -1).numpy()
    ref = mu + (sig @ np.linalg.solve(sig + sigma**2 * np.eye(len(sig)), (xv - mu).T)).T
    np.testing.assert_allclose(prior.wiener(x.double(), sigma).reshape(3, -1).numpy(), ref, atol=1e-10)
    # the σ-space view through the ε-network (float32)
    tol = 2e-6 * max(1.0, sigma)
    np.testing.assert_allclose(prior.denoise(x, sigma).reshape(3, -1).double().numpy(), ref, atol=tol)


def test_vp_view_agrees_with_sigma_view_at_fractional_t():
    prior = GaussianPrior((1, 8, 8))
    g = torch.Generator().manual_seed(2)
    x0 = prior.sample(4, g)
    t = torch.tensor([0.0, 17.25, 499.5, 998.9])
    a = prior.alpha_bar(t, x0)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
    sigma = prior.sigma_of_t(t)
    vp = prior.tweedie_vp(x_t, t)                                # (x_t − √(1−ᾱ) ε̂)/√ᾱ
    sig = prior.denoise(x_t / a.sqrt(), sigma)                   # D(x_t/√ᾱ, σ(t)) through t(σ)
    exact = prior.wiener(x_t.double() / a.double().sqrt(), sigma.double())
    assert torch.allclose(vp.double(), exact, atol=5e-5)
    assert torch.allclose(sig.double(), exact, atol=5e-5)
    # ε̂ is the exact score-matching target: ε̂ = (x_t/√ᾱ − D)/σ
    eps, v = prior.model_output(x_t, t)
    assert v is None
    ref = (x_t.double() / a.double().sqrt() - exact) / sigma.double().reshape(-1, 1, 1, 1)
    assert torch.allclose(eps.double(), ref, atol=1e-4)


def test_samples_have_the_prior_covariance():
    shape = (1, 4, 4)
    prior = GaussianPrior(shape, mean=0.3, alpha=2.0, scale=0.5)
    n = 40000
    x = prior.sample(n, torch.Generator().manual_seed(3), dtype=torch.float64).reshape(n, -1).numpy()
    sig = prior.covariance()
    # standard error of a sample covariance entry: √((Σ_ii Σ_jj + Σ_ij²)/n) ≤ √(2/n)·0.25 ≈ 0.0018
    assert np.abs(x.mean(0) - 0.3).max() < 5 * 0.5 / np.sqrt(n)
    assert np.abs(np.cov(x.T) - sig).max() < 6 * np.sqrt(2 / n) * 0.25
    # per-image generators: image i depends only on its generator
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    both = prior.sample(2, gens)
    alone = prior.sample(1, [torch.Generator().manual_seed(6)])
    assert torch.equal(both[1:], alone)


def brute_force_posterior(prior, a: np.ndarray, yv: np.ndarray, sigma_y: float, mu: float):
    """Information form on the [-1, 1] variable: y = ½A x + ½A·1 + n ⇒ Σ_post = (Σ⁻¹ + HᵀH/σ²)⁻¹,
    m = Σ_post(Σ⁻¹μ + Hᵀ(y − ½A·1)/σ²), with Σ from numpy's DFT matrices."""
    c, h, w = prior.image_shape
    sig = dense_sigma(h, w, c, 2.0, 0.5, 1.0)
    hmat = 0.5 * a
    info = np.linalg.inv(sig) + hmat.T @ hmat / sigma_y**2
    cov = np.linalg.inv(info)
    mean = cov @ (np.linalg.solve(sig, np.full(len(sig), mu)) + hmat.T @ (yv - 0.5 * a.sum(1)) / sigma_y**2)
    return mean, cov


@pytest.mark.parametrize("spec", ["mask:kind=random,fraction=0.5", "sr:factor=2,kernel=bicubic",
                                  "blur:kind=gaussian,size=3,std=1.0,boundary=circular", "denoise",
                                  "mri:accel=2,center=0.25,pattern=random"])
def test_posterior_matches_brute_force(spec):
    shape = (1, 4, 4)
    mu, sigma_y = 0.1, 0.05
    prior = GaussianPrior(shape, mean=mu)
    op = operators.build(spec, shape, seeds=[0])
    x = prior.sample(1, torch.Generator().manual_seed(4))
    y = operators.measure(op, (x + 1) / 2, noise=sigma_y, seeds=[0])
    a, b = dense_matrix(op)
    # the dense matrix is the operator
    probe = torch.rand((1, *shape), dtype=torch.float64)
    ap = op.A(probe.float())
    ap = torch.cat([ap.real.reshape(-1), ap.imag.reshape(-1)]) if ap.is_complex() else ap.reshape(-1)
    np.testing.assert_allclose(a @ probe.reshape(-1).numpy(), ap.double().numpy(), atol=1e-5)
    assert np.abs(b).max() == 0
    yv = torch.cat([y.real.reshape(-1), y.imag.reshape(-1)]) if y.is_complex() else y.reshape(-1)
    ref_mean, ref_cov = brute_force_posterior(prior, a, yv.double().numpy(), sigma_y, mu)
    mean, cov = prior.posterior(y, op, sigma_y)
    np.testing.assert_allclose(mean.reshape(-1).numpy(), ref_mean, atol=1e-8)
    np.testing.assert_allclose(cov[0].numpy(), ref_cov, atol=1e-8)


def test_noise_free_posterior_is_the_limit_and_consistent():
    shape = (1, 4, 4)
    prior = GaussianPrior(shape)
    op = operators.build("mask:kind=random,fraction=0.5", shape, seeds=[1])
    x = prior.sample(1, torch.Generator().manual_seed(5))
    y = operators.measure(op, (x + 1) / 2, noise=0.0, seeds=[0])
    mean0, cov0 = prior.posterior(y, op, 0.0)
    mean_small, cov_small = prior.posterior(y, op, 1e-5)
    assert torch.allclose(mean0, mean_small, atol=1e-6)
    assert torch.allclose(cov0, cov_small, atol=1e-6)
    # exact data consistency and no uncertainty where the pixel is observed
    assert torch.allclose(op.A((mean0.float() + 1) / 2), y, atol=1e-6)
    observed = op.mask.reshape(-1).bool()
    assert cov0[0].diagonal()[observed].abs().max() < 1e-10
    assert cov0[0].diagonal()[~observed].min() > 1e-3


def test_card_and_batch_of_operators():
    prior = GaussianPrior((3, 8, 8))
    card = prior.card
    assert (card.name, card.channels, card.image_size, card.domain) == ("gaussian", 3, 8, "synthetic Gaussian")
    assert not card.learned_variance and not card.latent
    # per-image operators (one mask per seed) give one posterior per image
    op = operators.build("mask:kind=random,fraction=0.5", (1, 4, 4), seeds=[0, 1])
    p1 = GaussianPrior((1, 4, 4))
    x = p1.sample(2, torch.Generator().manual_seed(0))
    y = operators.measure(op, (x + 1) / 2, noise=0.01, seeds=[0, 1])
    mean, cov = p1.posterior(y, op, 0.01)
    assert mean.shape == (2, 1, 4, 4) and cov.shape == (2, 16, 16)
    m1, _ = p1.posterior(y[1:], op.select(1), 0.01)
    assert torch.allclose(mean[1:], m1)
