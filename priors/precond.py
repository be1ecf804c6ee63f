"""EDM preconditioning (Karras, Aittala, Aila, Laine 2022, "Elucidating the design space of diffusion-based generative
models", Table 1) around an ADM UNet F, for priors trained with ``restore prior train --precond edm``::

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))
    c_skip = σ_d² / (σ² + σ_d²)     c_out = σ σ_d / √(σ² + σ_d²)     c_in = 1 / √(σ² + σ_d²)

    training: ln σ ~ N(P_mean, P_std²),  loss λ(σ) ‖D(x₀ + σ n; σ) − x₀‖²,  λ(σ) = (σ² + σ_d²) / (σ σ_d)²

so that F's input and its training target both have unit variance at every noise level, and the loss weight spends
the training on the noise levels that matter (P_mean = −1.2, P_std = 1.2, σ_d = 0.5 on [-1, 1] data, EDM's values).

Two departures from EDM, both so that the solvers see an ordinary prior:

* c_noise: EDM feeds ln(σ)/4 to its networks' embeddings; we feed the ADM UNet the continuous timestep t(σ) of the
  prior's discrete VP schedule (the input its sinusoidal embedding was designed for), and draw σ only inside the
  schedule's range [σ_0, σ_{T−1}].
* the forward of this module is the **discrete VP ε view** every solver uses: for x_t = √ᾱ_t (x₀ + σ_t n),
  x = x_t / √ᾱ_t = x_t √(1 + σ_t²) and ε̂ = (x − D(x; σ_t)) / σ_t, so ``DiffusionPrior`` (its σ-space ``denoise``
  included) works unchanged on top of it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import log_sigmas, sigma_of_t, t_of_sigma

#: EDM's data standard deviation and log-normal noise-level distribution (Karras et al. 2022, Table 1)
SIGMA_DATA, P_MEAN, P_STD = 0.5, -1.2, 1.2

PRECONDITIONINGS = ("ddpm", "edm")


class EDMPrecond(nn.Module):
    """D(x; σ) = c_skip x + c_out F(c_in x; t(σ)) around ``net`` (an ADM UNet); ``forward(x_t, t)`` returns ε̂ on the
    discrete VP schedule given by ``alphas_cumprod``."""

    def __init__(self, net: nn.Module, alphas_cumprod: Tensor, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)
        self.register_buffer("_log_sigmas", log_sigmas(torch.as_tensor(alphas_cumprod, dtype=torch.float64)),
                             persistent=False)

    @property
    def cfg(self):
        """The ADM configuration of the wrapped network (its size multiple, channels …)."""
        return self.net.cfg

    @property
    def sigma_range(self) -> tuple[float, float]:
        return float(self._log_sigmas[0].exp()), float(self._log_sigmas[-1].exp())

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """D(x; σ) for x = x₀ + σ n on the [-1, 1] data scale; σ one value per image, shaped (B,)."""
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (s ** 2 + sd2)
        c_out = s * self.sigma_data / (s ** 2 + sd2).sqrt()
        c_in = 1 / (s ** 2 + sd2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, t_of_sigma(self._log_sigmas, sigma).to(x.device))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        sigma = sigma_of_t(self._log_sigmas, t).to(x_t.device)
        s = sigma.to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        x = x_t * (1 + s ** 2).sqrt()
        return (x - self.denoise(x, sigma)) / s

    def loss(self, x0: Tensor, g: torch.Generator) -> Tensor:
        """EDM's weighted denoising loss on a batch x₀, with σ ~ exp(N(P_mean, P_std²)) clamped to the schedule's
        range and the noise drawn from ``g``."""
        lo, hi = self.sigma_range
        sigma = (torch.randn(x0.shape[0], generator=g) * P_STD + P_MEAN).exp().clamp(lo, hi).to(x0.device)
        n = torch.randn(x0.shape, generator=g).to(x0.device)
        s = sigma.reshape(-1, *([1] * (x0.dim() - 1)))
        weight = (s ** 2 + self.sigma_data ** 2) / (s * self.sigma_data) ** 2
        return (weight * (self.denoise(x0 + s * n, sigma).float() - x0) ** 2).mean()
