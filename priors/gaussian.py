"""A stationary Gaussian image prior whose MMSE denoiser is known exactly: the oracle that proves solvers right.

Model (on the [-1, 1] scale of every prior), each channel independent with the same spectrum::

    x₀ = μ·1 + F⁻¹[√P ⊙ F w],   w ~ N(0, I)          so   x₀ ~ N(μ·1, Σ),   Σ = Fᴴ diag(P) F,

with F the orthonormal 2-D DFT over (H, W) and a power-law spectrum on the integer frequencies k = (k_y, k_x)
(cycles per image, ``torch.fft.fftfreq(n) · n``)::

    P(k) = c / (ε + |k|²)^{α/2},   c such that the pixel variance (1/HW) Σ_k P(k) equals ``scale``².

Since P(k) = P(−k), Σ is real, symmetric and circulant (stationary). The exact MMSE denoiser of x = x₀ + σ·n is the
Fourier Wiener filter

    D(x, σ) = E[x₀ | x] = μ + F⁻¹[ P/(P + σ²) ⊙ F(x − μ) ],

and the prior's "network" is the ε-prediction that the discrete VP view expects: with ᾱ = 1/(1 + σ²) and
x_t = √ᾱ x₀ + √(1−ᾱ) ε, i.e. x_t/√ᾱ = x₀ + σ ε,

    ε̂(x_t, t) = (x_t/√ᾱ − D(x_t/√ᾱ, σ))/σ = F⁻¹[ σ/(P + σ²) ⊙ F(x_t/√ᾱ − μ) ],   σ = σ(t),

σ(t) interpolated in log σ between the schedule's points exactly as ``DiffusionPrior.sigma_of_t`` does, so fractional
timesteps work and the σ-space view ``denoise`` (which calls the network at t(σ)) returns the Wiener filter for every
σ in [σ_min, σ_max] of the schedule. Every solver code path (DDPM/DDIM on ᾱ_t, EDM-style on σ) is thus exact.

Exact posteriors for a linear operator (``dense_matrix``, ``posterior``): operators act on [0, 1] images, so for the
[-1, 1] variable x, y = A((x + 1)/2) + n = H x + b + n with H = ½A and b = ½A·1. With n ~ N(0, σ_y² I) (σ_y on the
[0, 1] measurement scale, as everywhere in ``restore``)::

    S = H Σ Hᵀ + σ_y² I,   K = Σ Hᵀ S⁺,   mean = μ + K (y − b − H μ),   Cov = Σ − K H Σ
      (= (Σ⁻¹ + HᵀH/σ_y²)⁻¹ when σ_y > 0; the pseudo-inverse S⁺ gives the σ_y → 0 limit for noise-free data),

in float64 with dense matrices: for tiny images only (N = C·H·W up to a few hundred). Complex measurements (MRI) are
stacked as [Re; Im], which is the real inner product the operators use and matches complex noise with σ_y on each part.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .base import DiffusionPrior, PriorCard, linear_betas

__all__ = ["GaussianPrior", "WienerEpsNet", "power_spectrum"]


def power_spectrum(h: int, w: int, alpha: float = 2.0, scale: float = 0.5, eps: float = 1.0) -> Tensor:
    """P(k) = c/(ε + |k|²)^{α/2} on the full H×W DFT grid (float64), c set so that the pixel std is ``scale``."""
    ky = torch.fft.fftfreq(h, dtype=torch.float64) * h
    kx = torch.fft.fftfreq(w, dtype=torch.float64) * w
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    p = (eps + k2) ** (-alpha / 2)
    return p * (scale**2 * h * w / p.sum())  # (1/HW) Σ P = scale²


def _filter(x: Tensor, mult: Tensor) -> Tensor:
    """F⁻¹[mult ⊙ F x] over the last two dimensions, for a real multiplier with mult(k) = mult(−k) (so the result is
    real). ``mult`` is given on the full grid; the real FFT uses its first W//2 + 1 columns."""
    w = x.shape[-1]
    return torch.fft.irfft2(mult[..., : w // 2 + 1].to(x.dtype) * torch.fft.rfft2(x), s=x.shape[-2:])


class WienerEpsNet(nn.Module):
    """The ε-network of the Gaussian prior: ε̂(x_t, t) = F⁻¹[σ/(P + σ²) ⊙ F(x_t/√ᾱ − μ)] with σ = σ(t)."""

    def __init__(self, spectrum: Tensor, mean: float, log_sigmas: Tensor):
        super().__init__()
        self.mean = float(mean)
        self.register_buffer("spectrum", spectrum.clone(), persistent=False)       # P, float64 (H, W)
        self.register_buffer("log_sigmas", log_sigmas.clone(), persistent=False)   # log σ_t, float64 (T,)

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """σ(t), linear in log σ between integer timesteps (the same rule as ``DiffusionPrior.sigma_of_t``)."""
        ls = self.log_sigmas
        t = t.to(torch.float64).clamp(0, len(ls) - 1)
        lo = t.floor().long().clamp(max=len(ls) - 2)
        frac = t - lo
        return ((1 - frac) * ls[lo] + frac * ls[lo + 1]).exp()

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        sigma = self.sigma_of_t(t).reshape(-1, 1, 1, 1)          # float64, per image
        x = x_t.to(torch.float64) * (1 + sigma**2).sqrt()         # x_t/√ᾱ = x₀ + σ ε
        p = self.spectrum
        return _filter(x - self.mean, sigma / (p + sigma**2)).to(x_t.dtype)


class GaussianPrior(DiffusionPrior):
    """x₀ ~ N(μ·1, Σ) on [-1, 1] with Σ diagonal in the orthonormal 2-D DFT basis (see the module docstring)."""

    def __init__(self, image_shape: Sequence[int], mean: float = 0.0, alpha: float = 2.0, scale: float = 0.5,
                 eps: float = 1.0, timesteps: int = 1000):
        c, h, w = (int(s) for s in image_shape)
        spectrum = power_spectrum(h, w, alpha, scale, eps)
        betas = linear_betas(timesteps)
        ac = torch.cumprod(1 - betas, dim=0)
        log_sigmas = 0.5 * torch.log((1 - ac) / ac)  # the schedule DiffusionPrior builds from the card
        card = PriorCard(name="gaussian", image_size=h if h == w else None, channels=c, domain="synthetic Gaussian",
                         schedule="linear", timesteps=timesteps, parameterisation="eps", learned_variance=False,
                         training_data="none (closed form)", licence="MIT",
                         architecture={"kind": "gaussian", "image_shape": [c, h, w], "mean": mean, "alpha": alpha,
                                       "scale": scale, "eps": eps})
        super().__init__(WienerEpsNet(spectrum, mean, log_sigmas), card)
        self.net.log_sigmas = self._log_sigmas  # one schedule: the network's σ(t) is the prior's
        self.image_shape = (c, h, w)
        self.mean_value = float(mean)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def spectrum(self) -> Tensor:
        """P(k) on the H×W grid (float64)."""
        return self.net.spectrum

    def wiener(self, x: Tensor, sigma: "float | Tensor") -> Tensor:
        """The closed-form MMSE denoiser D(x, σ) = μ + F⁻¹[P/(P + σ²) F(x − μ)] for any σ ≥ 0 (float64 inside)."""
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        s = s.reshape(-1, 1, 1, 1) if s.dim() else s
        p = self.spectrum
        out = self.mean_value + _filter(x.to(torch.float64) - self.mean_value, p / (p + s**2))
        return out.to(x.dtype)

    def sample(self, n: int, generator: "torch.Generator | Sequence[torch.Generator] | None" = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """n prior samples x₀ = μ + F⁻¹[√P F w] (image i from ``generator[i]`` when a list is given)."""
        shape = self.image_shape
        if isinstance(generator, (list, tuple)):
            w = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in generator])
        else:
            w = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
        w = w.to(self.spectrum.device)
        return (self.mean_value + _filter(w, self.spectrum.sqrt())).to(dtype)

    # ------------------------------------------------------------------------------------------------------------
    # dense linear algebra (tiny images)
    def covariance(self) -> np.ndarray:
        """Σ as a dense (N, N) float64 array, N = C·H·W (pixel order of ``x.reshape(-1)``), built by applying the
        filter F⁻¹ diag(P) F to every basis image."""
        n = math.prod(self.image_shape)
        eye = torch.eye(n, dtype=torch.float64, device=self.spectrum.device).reshape(n, *self.image_shape)
        return _filter(eye, self.spectrum).reshape(n, n).T.cpu().numpy()

    def mean_vector(self) -> np.ndarray:
        return np.full(math.prod(self.image_shape), self.mean_value)

    def posterior(self, y: Tensor, op, sigma_y: float) -> tuple[Tensor, Tensor]:
        """Exact posterior of the [-1, 1] image given y = A((x + 1)/2) + N(0, σ_y²) for a linear ``op``:
        (mean (B, C, H, W), covariance (B, N, N)), float64. σ_y = 0 gives the noise-free limit."""
        sigma_cov = self.covariance()
        mu = self.mean_vector()
        means, covs = [], []
        for i in range(y.shape[0]):
            op_i = op.select(i) if getattr(op, "batch", 1) > 1 else op
            a, b = dense_matrix(op_i, self.image_shape)
            h = 0.5 * a                      # y = ½A x + ½A·1 + n
            offset = 0.5 * (a @ np.ones(a.shape[1])) + b
            yi = _flatten_measurement(y[i : i + 1])
            s = h @ sigma_cov @ h.T + sigma_y**2 * np.eye(h.shape[0])
            gain = sigma_cov @ h.T @ _psd_pinv(s)
            means.append(mu + gain @ (yi - offset - h @ mu))
            cov = sigma_cov - gain @ h @ sigma_cov
            covs.append(0.5 * (cov + cov.T))
        mean = torch.from_numpy(np.stack(means)).reshape(-1, *self.image_shape)
        return mean, torch.from_numpy(np.stack(covs))


def _flatten_measurement(y: Tensor) -> np.ndarray:
    """One measurement as a real float64 vector ([Re; Im] for complex measurements)."""
    y = y.detach().cpu()
    if y.is_complex():
        return torch.cat([y.real.reshape(-1), y.imag.reshape(-1)]).double().numpy()
    return y.reshape(-1).double().numpy()


def dense_matrix(op, image_shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(A, b): the operator as a dense float64 matrix on flattened [0, 1] images, from ``op.A`` applied to every basis
    image (rows [Re; Im] for complex measurements), and the offset b = A(0) (zero for a linear operator)."""
    shape = tuple(image_shape or op.image_shape)
    n = math.prod(shape)
    with torch.no_grad():
        try:  # float64 where the operator accepts it (most do: their float32 buffers are promoted)
            eye = torch.eye(n, dtype=torch.float64, device=op.device).reshape(n, *shape)
            b = op.A(torch.zeros_like(eye[:1]))
            cols = op.A(eye) - b
        except RuntimeError:
            eye = torch.eye(n, dtype=torch.float32, device=op.device).reshape(n, *shape)
            b = op.A(torch.zeros_like(eye[:1]))
            cols = op.A(eye) - b
    if cols.is_complex():
        flat = torch.cat([cols.real.reshape(n, -1), cols.imag.reshape(n, -1)], dim=1)
    else:
        flat = cols.reshape(n, -1)
    return flat.T.double().cpu().numpy(), _flatten_measurement(b)


def _psd_pinv(s: np.ndarray, rcond: float = 1e-10) -> np.ndarray:
    """Pseudo-inverse of a symmetric positive semi-definite matrix (eigenvalues ≤ rcond·max dropped)."""
    s = 0.5 * (s + s.T)
    vals, vecs = np.linalg.eigh(s)
    keep = vals > rcond * max(vals.max(), 0.0)
    inv = np.where(keep, 1.0 / np.where(keep, vals, 1.0), 0.0)
    return (vecs * inv) @ vecs.T
