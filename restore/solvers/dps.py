"""DPS — Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky & Ye, ICLR 2023), as the official code runs it
(``DPS2022/diffusion-posterior-sampling``: ``guided_diffusion/gaussian_diffusion.py`` ``DDPM.p_sample`` and
``p_sample_loop``, ``condition_methods.py`` ``PosteriorSampling``; see ``reference-solvers.md`` §2.1).

Algorithm (DDPM ancestral sampling with a measurement-gradient step; i runs over the kept timesteps, high to low)::

    x_N ~ N(0, I)
    for i = N−1 … 0:
        ε̂, v   = ε_θ(x_i, t_i)                                          (v: learned-range variance channels, if any)
        x̂₀     = clamp(√(1/ᾱ_i) x_i − √(1/ᾱ_i − 1) ε̂, −1, 1)              (Tweedie, clip_denoised=True)
        μ       = c1_i x̂₀ + c2_i x_i,   c1 = β_i √ᾱ_{i−1}/(1−ᾱ_i),  c2 = (1−ᾱ_{i−1}) √α_i/(1−ᾱ_i)
        log σ²  = f log β_i + (1−f) log β̃_i,clipped,  f = (v+1)/2        (learned range; see ``variance`` below)
        x'_{i−1} = μ + σ z  (z ~ N(0, I); no noise at i = 0)
        x_{i−1}  = x'_{i−1} − ζ ∇_{x_i} ‖y − A(x̂₀)‖₂                     (plain, not squared, L2 norm; ζ = ``scale``)
    return x_0                                                           (the last sample, not x̂₀)

Timesteps: all T = 1000 by default (``timestep_respacing: 1000``). ``steps`` < T keeps a subset with
guided-diffusion's ``space_timesteps`` rule for one section (⌊round(k·(T−1)/(N−1))⌋, k = 0 … N−1) and the respaced
betas β'_k = 1 − ᾱ_{t_k}/ᾱ_{t_{k−1}}; the network still sees the original timestep t_k (``rescale_timesteps`` False).

Conventions and deliberate differences from the official code (each also stated where it happens):
* **Scale of the residual.** The official code runs on [-1, 1] images and measurements; here operators act on [0, 1]
  images, and for a linear A (with our y = A(x₀₁) + n) the official residual y₋₁ − A(x₋₁) is exactly 2(y − A(x₀₁)).
  The norm is therefore taken of 2(y − A((x̂₀+1)/2)), so the official ``scale`` values keep their meaning (and a
  measurement noise σ on [0, 1] is the official 2σ). For nonlinear operators (phase retrieval, HDR) the same factor 2
  is used: it is exact for HDR (clip(2x, −1, 1) on [-1, 1] = 2·ours − 1) and keeps the magnitude for phase retrieval
  (DPS applies |F·| to the [-1, 1] image, we to the [0, 1] one, so the two problems differ by the DC term).
* **Per-image norm.** The official ``torch.linalg.norm`` spans the whole batch tensor, which couples the images of a
  batch (each gets the gradient of the batch norm). We use Σ_b ‖r_b‖, so each image's step is its own ‖r_b‖'s
  gradient; identical for batch size 1 (the official runs use batch size 1).
* **Variance without learned channels.** The DPS checkpoints have learned-range variance (``learn_sigma: True``). For
  a network without those channels we follow guided-diffusion's default for ``learn_sigma=False``
  (``sigma_small=False`` → ``FIXED_LARGE``): σ² = β_i (β̃_1 at i = 0, where no noise is added anyway).
  ``variance=fixedsmall`` gives the posterior variance β̃_i (DDPM's other choice) instead.
* Per-image generators for x_N and every z (``rng.randn_like``), so results do not depend on the batch.
* μ is computed from detached x_i and x̂₀: the official code builds it inside the graph but detaches the update, and
  the gradient only flows through ‖y − A(x̂₀)‖, so the numbers are the same and no unused graph is kept.

Measurement noise: **DPS does not use σ_y**, in the paper and in the official code alike, and neither does this
implementation (``solve`` tells it the noise; its output is the same whatever σ_y it is told). The paper starts from
the Gaussian likelihood's gradient ∇‖y − A(x̂₀)‖²/σ_y² and replaces the 1/σ_y² by the adaptive step
ζ_i = ζ'/‖y − A(x̂₀)‖, which the official code writes as ζ∇‖y − A(x̂₀)‖ (ζ = 2ζ'): each step moves x by ζ·Jᵀr/‖r‖, a fixed
length whatever the residual, so the guidance nudges towards y without a weight that would fit it exactly; how much
of the noise is left depends on ζ and the number of steps (tuned at the configs' σ = 0.05 on [-1, 1]), not on σ_y.
Measured on ``denoise`` at σ_y = 0.1 (faces64; ``tests/test_solvers_denoise.py``): the fast preset removes much of
the noise (4 faces: 20.43 → 26.48 dB, DDNM+ 29.35), and with fewer steps less or none (the sample face and its
mirror: 50 steps +3.5 dB, 30 steps +0.2, 20 steps −2.9).

Operators far from unit scale (``normalise``, default "auto"): for ‖AᵀA‖ above ``base.GAIN_LIMIT`` (CT's Radon
transform) the guidance norm is taken of the normalised operator, ‖y − A x̂₀‖/‖A‖, so ζ keeps the meaning it has on
the official tasks (none of which reaches the limit); "off" disables it. Our extension: no official CT task.

Step-size presets (``scale``, the official ``configs/*_config.yaml``): SR ×4, Gaussian and motion deblur 0.3;
inpainting (box and random) 0.5; phase retrieval 1.0 (``nonlinear_deblur`` 0.3). Tasks without an official config
(other SR factors, CT, HDR, denoising) use 0.5, the inpainting value, our choice — tune with ``scale=…``. MRI has
none either; its ``mri`` preset (250 respaced steps, ζ = 1.5, ``variance=fixedsmall``) was chosen on training slices
(docs/priors.md, brain-mri): a fixed-length step large enough for 4× made some 8× slices diverge (ζ = 2: two of 8),
and the posterior variance β̃ of the respaced steps gained over β at 100 steps.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import NORMALISE, Solver, SolverError, at_least, batch_norm, data_term_scale, one_of, to01
VARIANCES = ("auto", "learned", "fixedlarge", "fixedsmall")


def space_timesteps(T: int, steps: int) -> list[int]:
    """guided-diffusion's ``space_timesteps(T, [steps])``: ``steps`` timesteps evenly spread over 0 … T−1 (rounded),
    in increasing order. ``steps == T`` keeps them all."""
    if not 1 <= steps <= T:
        raise SolverError(f"DPS steps must be between 1 and {T}, got {steps}.")
    stride = (T - 1) / (steps - 1) if steps > 1 else 1
    return sorted({round(k * stride) for k in range(steps)})


def alphas_cumprod64(prior) -> np.ndarray:
    """ᾱ_t (t = 0 … T−1) in float64 from the prior's schedule (its float64 log σ_t: ᾱ = 1/(1 + σ²))."""
    log_sigmas = getattr(prior, "_log_sigmas", None)
    if log_sigmas is None:
        return prior.alphas_cumprod.double().cpu().numpy()
    return 1.0 / (1.0 + np.exp(2.0 * log_sigmas.double().cpu().numpy()))


class DDPMCoefficients:
    """The respaced DDPM quantities of guided-diffusion's ``GaussianDiffusion`` for the kept timesteps (float64)."""

    def __init__(self, alphas_cumprod: np.ndarray, timesteps: Sequence[int]):
        ac = alphas_cumprod[list(timesteps)]
        ac_prev = np.append(1.0, ac[:-1])
        betas = 1.0 - ac / ac_prev                                       # β'_k = 1 − ᾱ_k/ᾱ_{k−1}
        self.timesteps = list(timesteps)
        self.sqrt_recip_ac = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_ac = np.sqrt(1.0 / ac - 1.0)
        self.coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)               # posterior mean coefficient of x̂₀
        self.coef2 = (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac)  # … and of x_t
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)                  # β̃_k
        post_var_1 = post_var[1] if len(post_var) > 1 else betas[0]
        self.log_var_small = np.log(np.append(post_var_1, post_var[1:]))  # log β̃ clipped (β̃_0 = 0 → β̃_1)
        self.log_var_large = np.log(np.append(post_var_1, betas[1:]))      # FIXED_LARGE: β (β̃_1 at k = 0)
        self.log_betas = np.log(betas)


class DPS(Solver):
    name = "dps"
    description = "Diffusion Posterior Sampling (Chung et al. 2023): DDPM + ζ∇‖y − A(x̂₀)‖, backprop through the UNet"
    needs = frozenset({"pixel"})  # any differentiable operator; a latent prior would need decoding inside the graph
    uses_grad = True
    defaults = {"scale": 0.5, "steps": 1000, "variance": "auto", "normalise": "auto"}
    presets = {
        "default": {"description": "ζ = 0.5 (no official config for this task; the inpainting value), 1000 steps"},
        "sr4": {"scale": 0.3, "description": "official super_resolution_config: ζ = 0.3, 1000 steps"},
        "sr2": {"scale": 0.3, "description": "SR ×2 with the official SR step size ζ = 0.3"},
        "sr8": {"scale": 0.3, "description": "SR ×8 with the official SR step size ζ = 0.3"},
        "deblur-gauss": {"scale": 0.3, "description": "official gaussian_deblur_config: ζ = 0.3"},
        "deblur-motion": {"scale": 0.3, "description": "official motion_deblur_config: ζ = 0.3"},
        "inpaint-box": {"scale": 0.5, "description": "official inpainting_config (box): ζ = 0.5"},
        "inpaint-random": {"scale": 0.5, "description": "official inpainting_config (random): ζ = 0.5"},
        "phase-retrieval": {"scale": 1.0, "description": "official phase_retrieval_config: ζ = 1.0"},
        "mri": {"steps": 250, "scale": 1.5, "variance": "fixedsmall",
                "description": "250 respaced steps, ζ = 1.5, the posterior variance β̃ (no official MRI config; chosen "
                               "on 8 training slices at σ = 0.025, the `brain-mri` section of docs/priors.md: "
                               "`fast` was unstable at 8× and short at 4×)"},
        "fast": {"steps": 100, "scale": 4.0,
                 "description": "100 respaced DDPM steps with ζ = 4 (not in the paper: ten times fewer guided steps "
                                "need a larger step; on faces64 SR×4, ζ = 0.5/1/2/4 gave 12.6/16.4/19.3/21.1 dB)"},
    }

    rules = {"variance": one_of(*VARIANCES), "scale": at_least(0), "normalise": one_of(*NORMALISE),
             "steps": at_least(1)}

    def sample(self, y: Tensor, op, prior, rng, progress=None) -> Tensor:
        zeta = float(self.params["scale"])
        T = int(prior.alphas_cumprod.shape[0])
        coef = DDPMCoefficients(alphas_cumprod64(prior), space_timesteps(T, int(self.params["steps"])))
        n = len(coef.timesteps)
        variance = self.params["variance"]
        shape = (y.shape[0], prior.card.channels, *op.image_shape[1:])
        x = rng.randn(shape, device=y.device)          # x_N ~ N(0, I)
        # CT: the normalised operator A/‖A‖ (data_term_scale), so ζ keeps its unit-scale meaning: ‖r‖/‖A‖
        norm_scale = data_term_scale(op, shape[0], y.device, self.params["normalise"]).view(-1).sqrt()

        for k in reversed(range(n)):
            t = torch.full((shape[0],), float(coef.timesteps[k]), device=y.device)
            x = x.requires_grad_(True)
            eps, v = prior.model_output(x, t)
            if variance == "learned" and v is None:
                raise SolverError(f"prior '{prior.card.name}' has no learned variance channels; use variance=auto.")
            # x̂₀ = clamp(√(1/ᾱ) x − √(1/ᾱ − 1) ε̂, −1, 1)
            x0 = (coef.sqrt_recip_ac[k] * x - coef.sqrt_recipm1_ac[k] * eps).clamp(-1.0, 1.0)
            # the guidance term ‖y − A(x̂₀)‖ on the [-1, 1] scale (×2, see the module docstring), per image
            residual = 2.0 * (y - op.A(to01(x0)))
            norm = batch_norm(residual) * norm_scale
            (grad,) = torch.autograd.grad(norm.sum(), x)
            with torch.no_grad():
                x0, x_t = x0.detach(), x.detach()
                # x'_{i−1} = μ + σ z, μ = c1 x̂₀ + c2 x_i
                x_prev = coef.coef1[k] * x0 + coef.coef2[k] * x_t
                if k > 0:
                    if v is not None and variance in ("auto", "learned"):
                        frac = (v.detach() + 1) / 2                              # learned range: v ∈ [-1, 1]
                        log_var = frac * coef.log_betas[k] + (1 - frac) * coef.log_var_small[k]
                        std = (0.5 * log_var).exp()
                    else:
                        std = math.exp(0.5 * (coef.log_var_small[k] if variance == "fixedsmall"
                                              else coef.log_var_large[k]))
                    x_prev = x_prev + std * rng.randn_like(x_t)
                # x_{i−1} = x'_{i−1} − ζ ∇_{x_i} ‖y − A(x̂₀)‖
                x = x_prev - zeta * grad
            if progress:
                progress(n - k, n)
        return x
