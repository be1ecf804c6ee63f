"""Diffusion priors behind one interface: ``DiffusionPrior`` (σ-space Tweedie denoiser + discrete VP view), the ADM
(guided-diffusion) UNet, exact checkpoint loading, a registry of named priors, and training of our own priors.

>>> import priors
>>> prior = priors.resolve("faces64")          # embedded, a public name, a checkpoint path or a diffusers folder
>>> x0_hat = prior.denoise(x_noisy, sigma=0.5)  # x on [-1, 1]

The names below are imported on first use, so ``import priors`` (and listing the registry's cards) does not load
torch.
"""

import importlib

_WHERE = {"DiffusionPrior": "base", "PriorCard": "card", "PriorError": "card", "PUBLIC": "registry",
          "cache_dir": "registry", "card_of": "registry", "fetch": "registry", "list_priors": "registry",
          "resolve": "registry", "verify": "registry"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
