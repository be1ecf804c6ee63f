"""DPIR — Plug-and-Play Image Restoration with Deep Denoiser Prior (Zhang, Li, Zuo, Zhang, Van Gool & Timofte,
IEEE TPAMI 2021), as its scripts run it (``main_dpir_deblur.py``, ``main_dpir_sisr.py``, ``main_dpir_demosaick.py``
of cszn/DPIR), with the prior's σ-space denoiser D(x, σ) in place of DRUNet.

Half-quadratic splitting with a decreasing noise level (Algorithm 1 of the paper; σ_k and σ_n on [0, 1], the
operator on [0, 1] images, D on the prior's [-1, 1] scale, so it is given 2σ_k)::

    σ_k = logspace(σ₁, σ_K, K)             σ₁ = 49/255, σ_K = max(σ_n, σ_min)      (``get_rho_sigma``, w = 1)
    ρ_k = λ max(σ_n, 0.001)² / σ_k²         λ = 0.23
    z₀  = ½                                  (mid-grey)
    for k = 1 … K:
        x_k = argmin_x ‖y − A x‖² + ρ_k ‖x − z_{k−1}‖²        (data step: closed form or conjugate gradients)
        z_k = g_k⁻¹ D(g_k x_k, σ_k)                          (prior step: the denoiser at the level ρ_k assumes)
    return z_K

(Ours: λ = 0.1 in most task presets, and σ_K = the noise level A⁺ passes on to the image for CT; below.)

g_k is the scripts' ``x8 = True`` (their default in all three): the (k − 1) mod 8-th of the 8 flips and quarter turns
of ``augment_img_tensor4``, a self-ensemble spread over the steps at no extra cost (``x8=false``: g_k = identity).

A data step with ρ_k passes the noise through the small singular values up to about σ_k, which is why the denoiser
level follows ρ_k; the first steps restore the coarse structure, the last ones remove the residual noise at σ_n.
Deterministic (one result for every seed); NFE = K, no backpropagation. ``--equivariant dihedral`` averages each
step's denoiser over all 8 symmetries on top of this (8× the time).

Presets, from the scripts: deblurring 8 steps, σ_K = σ_n; super-resolution 24 steps, σ_K ≥ factor/255 (``modelSigma2
= max(sf, noise_level_model·255)``). Not the scripts' setting: Gaussian deblurring, super-resolution, random
inpainting and MRI take λ = 0.1, where the scripts' 0.23 was tuned for DRUNet. On 24 centre crops (128²) of
*training* photographs (``train/bsds400``) with the ``natural`` prior, λ = 0.1 against 0.23: Gaussian deblurring
+0.19, +0.22 and +0.26 dB at σ_n = 0.01, 0.025 and 0.05 (0.15 and 0.05 were between, 0.02 diverged; 16–40 steps and
σ₁ = 0.1–0.3 within 0.05 dB of 8 steps from 49/255), SR×4 +0.15 and +0.36 dB at σ_n = 0.025 and 0.05, SR×2 +0.15,
70% random inpainting +0.09; on 32 training faces with ``faces64`` Gaussian deblurring +0.04, SR×2 +0.06, SR×4 −0.01
and random inpainting +0.12; on 12 training brain-MRI slices (``brain-mri``, the 40-step preset) +0.09 at 4× and
+0.04 at 8×; LPIPS lower in every case. CT was level (λ from 0.05 to 1 within 0.12 dB) and keeps 0.23. Motion blur
keeps 0.23: its kernel's spectrum has near-zeros, through which the weaker coupling lets the noise in (λ = 0.1:
22.58 dB against 25.01 on the training photographs). Random inpainting takes the demosaicking script's 40 steps and
σ_K ≥ 0.6/255 (DPIR has no inpainting script; demosaicking is the nearest, a mask of missing samples). MRI
(undersampled k-space: a mask of missing samples in the Fourier domain; DPIR has no MRI script) takes the same 40
steps: on 16 brain-MRI *training* slices at σ_y = 0.025 they gained over zero filling +6.52 dB at 4× and +2.13 at
8×, against +5.10 and +1.31 with 8 steps (24 steps: +6.47 and +1.98). CT (``ct`` preset) ends the σ schedule not at
σ_n but at the noise level A⁺ (FBP) passes on to the image, the standard deviation of A⁺n for white noise n of σ_n
(``sigma_end`` < 0; ``passed_noise``): a sinogram entry is a sum of about N pixels along a ray, so the same σ_n is a
far smaller noise in the image, 0.64 σ_n/√views (0.0021 at 60 views and σ_n = 0.025), and a last denoising at σ_n =
0.025 smooths away detail. On 8 CT *training* slices (``train/ct512_hu1024``, 128², σ_n = 0.025) at 60 / 30 views:
43.82 / 37.85 dB against 37.90 / 35.38 ending at σ_n (fixed ends 0.001, 0.0025, 0.005, 0.01: 43.55, 43.86, 43.70,
42.56 at 60 views, 0.0025 and 0.005: 37.76 and 37.98 at 30; 0.05: 32.75 at 60; TV 38.91 / 34.16, FBP 31.74 / 27.47);
λ from 0.05 to 1 moved it by less than 0.12 dB. Other tasks (box inpainting, denoising) take the default: the
deblurring script's settings, λ = 0.23; for denoising alone ``tweedie`` is the one-step posterior mean.

Conventions and deliberate differences:
* The start: the scripts start the first data step from y (deblurring), bicubic-upsampled y (super-resolution) or
  a demosaicked y; deepinv's ``DPIR`` from Aᵀy. Ours starts from mid-grey for every operator. Where it differs
  from the scripts' start it is only in the modes A nearly removes (singular values below √ρ₁ ≈ 0.06 at σ_n =
  0.025), which the first data step otherwise copies from the start, and in the null space, which mid-grey fills
  with no structure (Aᵀy leaves masked pixels black).
* The demosaicking script clamps x_k to [0, 1] before each denoising; the deblurring and SR scripts, and ours, do not.
* The ρ floor is the scripts' 0.255/255 (deepinv's is 0.01). The denoiser is the prior's D(x, σ) (Tweedie's formula
  from its ε-network at the timestep with that σ), not DRUNet with a noise-level map; DRUNet was trained for σ up
  to 50/255, our priors for every σ of their schedule.
* ``tests/test_solver_dpir.py`` checks the loop against deepinv's ``DPIR`` (HQS with ``get_DPIR_params``) on
  the same denoiser and start.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import Rule, Solver, at_least, between, data_prox, positive, real_part, to01, to_pm1


#: the scripts' ``augment_img_tensor4`` modes 0–7: (quarter turns in the (H, W) plane, then a flip of H)
MODES = ((0, False), (1, True), (0, True), (3, False), (2, True), (1, False), (2, False), (3, True))


def augment(x: Tensor, mode: int) -> Tensor:
    """The scripts' ``augment_img_tensor4(x, mode)`` on (B, C, H, W) images."""
    turns, flip = MODES[mode]
    x = x.rot90(turns, [2, 3]) if turns else x
    return x.flip([2]) if flip else x


def unaugment(x: Tensor, mode: int) -> Tensor:
    """Its inverse, as the scripts undo it: modes 3 and 5 (quarter turns) are each other's inverse, the other modes
    (half turn, flips) their own."""
    return augment(x, 8 - mode if mode in (3, 5) else mode)


def dpir_sigmas(sigma_start: float, sigma_end: float, steps: int) -> list[float]:
    """The denoiser's noise levels on [0, 1], from ``sigma_start`` down to ``sigma_end`` evenly in log σ, in float32
    as the scripts' ``get_rho_sigma`` makes them (in units of 1/255, then divided)."""
    levels = np.logspace(np.log10(sigma_start * 255.0), np.log10(sigma_end * 255.0), steps).astype(np.float32)
    return [float(v) / 255.0 for v in levels]


def passed_noise(op, y: Tensor, sigma_n: float) -> float:
    """The standard deviation of A⁺n for white noise n of σ_n shaped like y (one draw, a fixed seed): the noise level
    the pseudo-inverse passes on to the image. For CT's FBP it is 0.64 σ_n/√views, whatever the image size."""
    g = torch.Generator(device=y.device).manual_seed(0)
    real = y.real.dtype if y.is_complex() else y.dtype
    draw = lambda: torch.randn(y.shape, generator=g, device=y.device, dtype=real)  # noqa: E731
    n = sigma_n * (torch.complex(draw(), draw()) if y.is_complex() else draw())  # σ_n on each part, as measured
    return float(real_part(op.A_pinv(n)).std())


class DPIR(Solver):
    name = "dpir"
    description = "DPIR (Zhang et al. 2021): plug-and-play HQS with the prior's denoiser at decreasing σ; deterministic"
    needs = frozenset({"linear", "pixel"})
    stochastic = False
    defaults = {"steps": 8, "lam": 0.23, "sigma_start": 49 / 255, "sigma_min": 0.0, "sigma_end": 0.0,
                "sigma_floor": 0.255 / 255, "rcond": 1e-3, "x8": True}
    presets = {
        "default": {"description": "main_dpir_deblur.py: 8 steps, λ = 0.23, σ from 49/255 down to σ_n"},
        "deblur-gauss": {"lam": 0.1, "description": "main_dpir_deblur.py's 8 steps, σ from 49/255 down to σ_n, with "
                                                    "λ = 0.1 (tuned on training photographs: +0.19 to +0.26 dB over "
                                                    "the script's 0.23 at σ_n = 0.01–0.05)"},
        "deblur-motion": {"description": "main_dpir_deblur.py: 8 steps, λ = 0.23, σ from 49/255 down to σ_n"},
        "sr2": {"steps": 24, "lam": 0.1, "sigma_min": 2 / 255,
                "description": "main_dpir_sisr.py's 24 steps, σ down to max(σ_n, 2/255), with λ = 0.1"},
        "sr3": {"steps": 24, "lam": 0.1, "sigma_min": 3 / 255,
                "description": "main_dpir_sisr.py's 24 steps, σ down to max(σ_n, 3/255), with λ = 0.1"},
        "sr4": {"steps": 24, "lam": 0.1, "sigma_min": 4 / 255,
                "description": "main_dpir_sisr.py's 24 steps, σ down to max(σ_n, 4/255), with λ = 0.1 (tuned on "
                               "training photographs: +0.15 to +0.36 dB over the script's 0.23)"},
        "inpaint-random": {"steps": 40, "lam": 0.1, "sigma_min": 0.6 / 255,
                           "description": "main_dpir_demosaick.py's 40 steps, σ down to max(σ_n, 0.6/255), with λ = "
                                          "0.1"},
        "ct": {"sigma_end": -1.0,
               "description": "main_dpir_deblur.py's 8 steps, λ = 0.23, but σ down to the noise FBP passes on to the "
                              "image (0.64 σ_n/√views) instead of σ_n: a sinogram is a sum along each ray, far larger "
                              "than the image, so σ_n there is a much smaller noise in the image"},
        "mri": {"steps": 40, "lam": 0.1, "sigma_min": 0.6 / 255,
                "description": "k-space undersampling as a mask of missing samples: main_dpir_demosaick.py's 40 "
                               "steps, σ down to max(σ_n, 0.6/255), with λ = 0.1"},
    }
    rules = {"steps": at_least(1), "lam": positive(), "sigma_start": Rule(low=0, high=1, low_open=True),
             "sigma_min": between(0, 1), "sigma_end": between(-1, 1),
             "sigma_floor": positive(), "rcond": between(0, 1)}

    def sample(self, y: Tensor, op, prior, rng: Sequence[torch.Generator], progress=None) -> Tensor:
        p = self.params
        sigma_n = float(getattr(self, "noise", 0.0) or 0.0)
        if float(p["sigma_end"]) < 0:  # the noise level A⁺ passes on to the image (CT: far below σ_n)
            end = max(passed_noise(op, y, sigma_n), float(p["sigma_min"]), float(p["sigma_floor"]))
        else:
            end = float(p["sigma_end"]) or max(sigma_n, float(p["sigma_min"]), float(p["sigma_floor"]))
        sigmas = dpir_sigmas(float(p["sigma_start"]), end, int(p["steps"]))
        rho_sigma = max(sigma_n, float(p["sigma_floor"]))
        prox = data_prox(y, op, float(p["rcond"]))
        z = torch.full((y.shape[0], prior.card.channels, *op.image_shape[1:]), 0.5, device=y.device)
        for k, s in enumerate(sigmas):
            x = prox(z, float(p["lam"]) * rho_sigma**2 / s**2)                 # data step, on [0, 1]
            mode = k % 8 if p["x8"] else 0
            z = unaugment(to01(prior.denoise(to_pm1(augment(x, mode)), 2 * s)), mode)   # prior step, D on [-1, 1]
            if progress:
                progress(k + 1, len(sigmas))
        return to_pm1(z)
