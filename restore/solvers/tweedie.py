"""Tweedie — the prior's posterior mean for denoising, in one network evaluation (Tweedie's formula: Robbins 1956;
Efron, "Tweedie's formula and selection bias", JASA 2011; the denoiser–score identity every diffusion prior is
trained on, Vincent 2011).

Algorithm (y = x + n with n ~ N(0, σ_y² I); x, y on the prior's [-1, 1] scale, so σ_y is twice the measurement's σ on
[0, 1])::

    σ_y  = 2·``sigma_y`` when that is ≥ 0, else 2·σ (the measurement's), else 2·σ̂ estimated from y (no σ known)
    x̂    = E[x | y] = y + σ_y² ∇ log p_{σ_y}(y) = D_θ(y, σ_y)                (the prior's σ-space denoiser)
    return x̂

No iterations and no randomness: the estimate is the minimum-mean-squared-error one under the prior, the same for
every seed. A diffusion sampler on ``denoise`` (DDNM, DAPS) returns one *draw* from p(x | y) instead, whose expected
squared error is twice the mean's (E‖x' − x‖² = 2·tr Cov(x | y) for a draw x' independent of x given y) and which keeps
more texture; ``--samples K --estimate mean`` on a sampler approaches this estimate at K times the cost. σ̂ is
scikit-image's wavelet estimate (the one ``bm3d`` and ``nlm`` use when no σ is given), reported as ``sigma_used``.

With ``--equivariant`` the denoiser is averaged over flips (and rotations) of the image (``priors.base``): measured
on 8 CBSD68 photographs with the ``natural`` prior, +0.12 to +0.15 dB for 8× the time (docs/priors.md).
Only for the ``denoise`` operator (A = I): for any other the posterior mean has no one-step form; use a sampler.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import Solver, SolverError, at_least, to01, to_pm1


class Tweedie(Solver):
    name = "tweedie"
    description = "posterior mean E[x|y] = D(y, σ_y) in one evaluation (Tweedie's formula; denoise only)"
    needs = frozenset({"pixel"})
    stochastic = False
    steps_param = ""
    defaults = {"sigma_y": -1.0}
    presets = {"default": {"description": "the measurement's σ, or σ estimated from y when it has none "
                                          "(sigma_y ≥ 0 sets σ on [0, 1] instead)"}}
    rules = {"sigma_y": at_least(-1.0)}

    def check(self, op, prior) -> None:
        super().check(op, prior)
        if op.spec.family != "denoise":
            raise SolverError(f"solver 'tweedie' is the one-step posterior mean for denoising (--operator denoise); "
                              f"for '{op.spec.family}' use a sampler such as ddnm, ddrm or daps (with --samples K "
                              f"--estimate mean for a posterior mean).")

    def sample(self, y: Tensor, op, prior, rng: Sequence[torch.Generator], progress=None) -> Tensor:
        from .baselines import estimated_sigma, numpy_images

        p = float(self.params["sigma_y"])
        known = p if p >= 0 else float(getattr(self, "noise", 0.0) or 0.0)
        y01 = op.A_pinv(y)  # A = I: y itself, on [0, 1]
        if known > 0 or p >= 0:  # a σ given (sigma_y = 0: nothing to remove)
            sigmas = [known] * y.shape[0]
        else:
            sigmas = [estimated_sigma(img) for img in numpy_images(y01)]
        self.reported = {"sigma_used": [round(s, 6) for s in sigmas]}
        x = to_pm1(y01)
        s = torch.tensor(sigmas, dtype=x.dtype, device=x.device)
        out = x.clone()
        keep = s > 0  # an image with no noise to remove is returned as it is
        if bool(keep.any()):
            out[keep] = prior.denoise(x[keep], 2 * s[keep])
        if progress:
            progress(1, 1)
        return to_pm1(to01(out).clamp(0, 1))
