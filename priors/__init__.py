"""Diffusion priors behind one interface: ``DiffusionPrior`` (σ-space Tweedie denoiser + discrete VP view), the ADM
(guided-diffusion) UNet, exact checkpoint loading, a registry of named priors, and training of our own priors.

>>> import priors
>>> prior = priors.resolve("faces64")          # embedded, a public name, a checkpoint path or a diffusers folder
>>> x0_hat = prior.denoise(x_noisy, sigma=0.5)  # x on [-1, 1]
"""

from .base import DiffusionPrior, PriorCard, PriorError
from .registry import PUBLIC, cache_dir, card_of, fetch, list_priors, resolve, verify

__all__ = ["DiffusionPrior", "PriorCard", "PriorError", "PUBLIC", "cache_dir", "card_of", "fetch", "list_priors",
           "resolve", "verify"]
