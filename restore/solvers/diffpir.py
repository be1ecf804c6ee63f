"""DiffPIR — Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu, Zhang, Liang, Cao, Wen, Timofte &
Van Gool, CVPR-W 2023), as its scripts run it (``main_ddpir_sisr.py``, ``main_ddpir_deblur.py``,
``main_ddpir_inpainting.py``; the loop and settings as kept in the public forks of zsyOAOA/DiffPIR).

Algorithm 1 of the paper (half-quadratic splitting with the diffusion model as the denoiser; σ̄_t = √((1−ᾱ_t)/ᾱ_t)
on the model's [-1, 1] scale, σ_n the measurement noise on [0, 1], ρ_t = λ σ_n² / σ̄_t²)::

    x_T = √ᾱ_T (2 A⁺y − 1) + √(1−ᾱ_T) z                        (t_start = T − 1; ≈ pure noise)
    for t on the quadratic grid from T − 1 down to 0:
        x₀⁽ᵗ⁾ = clamp((x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, −1, 1)     (the denoiser's x̂₀)
        if t is not the last:
            x̂₀⁽ᵗ⁾ = argmin_x ‖y − A x‖² + ρ_t ‖x − x₀⁽ᵗ⁾‖²            (data proximal step, on [0, 1])
            ε̂    = (x_t − √ᾱ_t x̂₀⁽ᵗ⁾) / √(1−ᾱ_t)
            x_{t'} = √ᾱ_{t'} x̂₀⁽ᵗ⁾ + √(1−ᾱ_{t'}) (√(1−ζ) ε̂ + √ζ z)   (t' the next grid point)
    return x₀⁽⁰⁾                                                  (the last denoised estimate, no data step)

The grid: ``sqrt(linspace(0, T², steps))`` as integers (the last reduced by one), read as noise levels from the top
(``skip_type = 'quad'``); each level's timestep is the nearest t by σ̄ (``find_nearest``). Defaults: 100 steps (the
paper's NFE-100 tables), λ = 1 and ζ = 0.1 (super-resolution and deblurring scripts), ζ = 1 for inpainting, σ_n ≥
0.001 (``sigma = max(0.001, noise_level_img)``). NFE = steps; no backpropagation. Not the scripts' setting: the
deblurring presets take λ = 7 (inside the paper's useful range 3–25; deepinv's default λ = 7 is our 14). With λ = 1
the data step at σ = 0.025 amplifies the noise through the blur's small singular values: 22.6 dB against 24.9 for
the Gaussian blur and 14.1 against 22.7 for the motion blur (4 test faces; on SR×4 λ = 1 was the better, 24.9
against 24.7). MRI (undersampled k-space, a mask of missing Fourier samples) takes the inpainting script's ζ = 1:
on 8 *training* slices (``train/brain_mri128``, spread over the folder; σ = 0.025), +6.13 / +3.14 dB over zero
filling at 4× / 8× against +3.40 / +0.58 with ζ = 0.1 (λ = 7 was 0.1–0.5 dB worse with either ζ).

The data step in closed form where A has an SVD (per mode: (s Uᵀy + ρ Vᵀx₀)/(s² + ρ), the null space keeps x₀ — the
scripts' FFT / mask formulas are this for their operators); otherwise x̂₀ = x₀ + argmin_d ‖A d − (y − A x₀)‖² + ρ‖d‖²
by conjugate gradients (CT, motion blur with reflecting boundaries).

Conventions and deliberate differences:
* The operator and y are on [0, 1], the prior on [-1, 1]: the data step works on (x₀ + 1)/2, as the scripts do.
* deepinv's ``DiffPIR`` (the independent implementation our tests compare with) differs in three places, each checked
  in ``tests/test_solver_diffpir.py``: its proximal step solves ‖Ax − y‖² + 2ρ‖x − x₀‖² (it passes γ = 1/(2ρ) to
  a prox of (γ/2)‖Ax − y‖²), so its λ is half ours; it starts from 2Aᵀy − 1 (we use A⁺y, as the SR script's
  upsampled y); it returns the last x_t instead of the last x₀.
* Per-image generators for x_T and every z, so results do not depend on the batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import Solver, at_least, between, data_prox, positive, real_part, task_of
from .dps import alphas_cumprod64


def diffpir_grid(T: int, steps: int) -> list[int]:
    """The timesteps of the ``quad`` grid, from the noisiest down. The scripts take level i as σ̄ at T−1−seq_i and
    map it back to the nearest timestep by σ̄, which is T−1−seq_i itself (σ̄ increases strictly with t)."""
    seq = [int(v) for v in np.sqrt(np.linspace(0, T**2, steps))]
    seq[-1] -= 1
    return [T - 1 - k for k in seq]


class DiffPIR(Solver):
    name = "diffpir"
    description = "DiffPIR (Zhu et al. 2023): half-quadratic splitting with the diffusion denoiser, λ and ζ"
    needs = frozenset({"linear", "pixel"})
    stochastic = True
    defaults = {"steps": 100, "lam": 1.0, "zeta": 0.1, "sigma_floor": 0.001, "rcond": 1e-3}
    presets = {
        "default": {"description": "the scripts' settings: 100 steps, λ = 1, ζ = 0.1 (ζ = 1 for inpainting)"},
        "inpaint-box": {"zeta": 1.0, "description": "main_ddpir_inpainting.py: 100 steps, λ = 1, ζ = 1"},
        "inpaint-random": {"zeta": 1.0, "description": "main_ddpir_inpainting.py: 100 steps, λ = 1, ζ = 1"},
        "sr4": {"description": "main_ddpir_sisr.py: 100 steps, λ = 1, ζ = 0.1"},
        "deblur-gauss": {"lam": 7.0, "description": "100 steps, λ = 7, ζ = 0.1 (the deblurring script's λ = 1 gave "
                                                    "22.6 dB against 24.9 on 4 test faces at σ = 0.025)"},
        "deblur-motion": {"lam": 7.0, "description": "100 steps, λ = 7, ζ = 0.1 (the deblurring script's λ = 1 gave "
                                                     "14.1 dB against 22.7 on 4 test faces at σ = 0.025)"},
        "mri": {"zeta": 1.0, "description": "100 steps, λ = 1, ζ = 1 as main_ddpir_inpainting.py: undersampled k-space "
                                           "is a mask of missing samples (8 training slices, σ = 0.025: "
                                           "+6.1 / +3.1 dB over zero filling at 4× / 8×, ζ = 0.1 +3.4 / +0.6)"},
        "20": {"steps": 20, "description": "the paper's NFE-20 setting (λ = 1, ζ = 0.1)"},
    }

    rules = {"zeta": between(0, 1), "lam": positive(), "sigma_floor": positive(), "steps": at_least(2)}

    def auto_preset(self, op, prior=None) -> str | None:
        task = task_of(op.spec)
        return task if task in self.presets else "default"

    def sample(self, y: Tensor, op, prior, rng: Sequence[torch.Generator], progress=None) -> Tensor:
        p = self.params
        ac = alphas_cumprod64(prior)
        grid = diffpir_grid(len(ac), int(p["steps"]))
        sigma_n = max(float(p["sigma_floor"]), float(getattr(self, "noise", 0.0)))
        lam, zeta = float(p["lam"]), float(p["zeta"])
        dev = y.device
        shape = (y.shape[0], prior.card.channels, *op.image_shape[1:])
        prox = self._prox(y, op)

        a_T = float(ac[grid[0]])
        start = 2 * real_part(op.A_pinv(y)).reshape(shape) - 1
        x = a_T**0.5 * start + (1 - a_T) ** 0.5 * rng.randn(shape, device=dev)
        x0 = x
        for i, t in enumerate(grid):
            a_t = float(ac[t])
            eps, _ = prior.model_output(x, torch.full((shape[0],), float(t), device=dev))
            x0 = ((x - (1 - a_t) ** 0.5 * eps) / a_t**0.5).clamp(-1, 1)
            if i < len(grid) - 1:
                rho = lam * sigma_n**2 / ((1 - a_t) / a_t)
                x0 = 2 * prox((x0 + 1) / 2, rho) - 1                         # the data step on [0, 1]
                eps_hat = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
                a_next = float(ac[grid[i + 1]])
                z = rng.randn_like(x)
                x = a_next**0.5 * x0 + (1 - a_next) ** 0.5 * ((1 - zeta) ** 0.5 * eps_hat + zeta**0.5 * z)
            if progress:
                progress(i + 1, len(grid))
        return x0

    def _prox(self, y: Tensor, op):
        """x₀ ↦ argmin_x ‖y − A x‖² + ρ‖x − x₀‖² on [0, 1] images (``base.data_prox``)."""
        return data_prox(y, op, float(self.params["rcond"]))
