"""DDNM / DDNM+ — Denoising Diffusion Null-space Model (Wang, Yu & Zhang, ICLR 2023), as the official code evaluates
it (``wyhuai/DDNM``: ``functions/svd_ddnm.py`` ``ddnm_diffusion`` / ``ddnm_plus_diffusion`` with the SVD operators
of ``functions/svd_operators.py``; see ``reference-solvers.md`` §3.1).

Algorithm (DDIM-style steps t → s on the grid 990, 980, …, 0, −1 with ᾱ_{−1} = 1; a = √ᾱ_s, σ_t = √(1 − ᾱ_s))::

    x_T ~ N(0, I)
    for each forward pair (t → s):
        ε̂      = ε_θ(x_t, t)                                        (first C channels; variance channels unused)
        x₀|t   = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t                             (Eq. 12; no clamp)
        x̂₀|t   = x₀|t − V Λ Vᵀ A⁺(A x₀|t − y)                         (Eq. 17; Λ = I without noise: range/null-space)
        x_s    = a x̂₀|t + V(d₁ ⊙ Vᵀz + d₂ ⊙ Vᵀε̂)                      (Eq. 51; z ~ N(0, I))
    for each backward pair (s > t, time travel): x_s = √ᾱ_s x₀|t + √(1−ᾱ_s) z    (the last *unrectified* x₀|t)
    return x at s = −1                                                (= x̂₀|t of the last step)

with, per spectral mode i of A = U diag(s) Vᵀ and the measurement noise σ_y on the [-1, 1] scale:

    λ_i = 1                           if σ_t ≥ a σ_y / s_i,   else  s_i σ_t √(1−η²)/(a σ_y)
    (d₁, d₂)_i = (σ_t η, σ_t √(1−η²))  if s_i = 0 (null space: plain DDIM with η)
               = (σ_t η, 0)            if σ_t < a σ_y / s_i
               = (√(σ_t² − a²σ_y²/s_i²), 0)  if σ_t > a σ_y / s_i
    σ_y = 0: λ = 1, (d₁, d₂) = (σ_t η, σ_t √(1−η²)) everywhere, i.e. noise-free DDNM
             x_s = a x̂₀|t + σ_t(η z + √(1−η²) ε̂)                   (``ddnm_diffusion``)

Defaults (``evaluation.sh``, ``configs/*.yml``): 100 steps (skip = T/100 = 10), η = 0.85, no time travel
(travel_length = travel_repeat = 1). NFE = 100 (plus (repeat−1)·length per jump point with time travel), no backprop.

Conventions and deliberate differences (each also stated where it happens):
* Operators act on [0, 1] images. With x on [-1, 1], A((x+1)/2) = y is A x = y₋₁ := 2y − A·1, so the solver works
  with y₋₁ and the [-1, 1]-scale noise σ_y = 2σ (σ on [0, 1], the measurement's, set by ``solve``); the official code
  also doubles its CLI ``--sigma_y`` (on [0, 1]). ``sigma_y`` ≥ 0 overrides the measurement's σ (0: plain DDNM).
  On ``denoise`` at σ = 0.1 (faces64, 4 faces) DDNM+ gives 29.35 dB from the noisy 20.43; plain DDNM projects onto
  A x = y, i.e. returns y (``tests/test_solvers_denoise.py``).
* Rectification is done on spectral coefficients: Vᵀ A⁺(A x − y₋₁) = 1[s>0]·(Vᵀx − Uᵀy₋₁/s). Singular values
  s ≤ ``rcond``·max s count as zero (null space), like the operators' own truncated A⁺ (blur ``rcond`` = 1e-3) and the
  official ``ZERO`` thresholds (3e-2 for its 5-tap deblur, 1e-3 for ``GeneralA``); without that, 1/s of a Gaussian
  blur's near-zero modes would amplify float32 rounding by up to 1e14.
* DDNM+ noise: the official ``Lambda_noise`` multiplies d₁, d₂ with z and ε̂ *re-indexed* into spectral order without
  rotating them by Vᵀ; we rotate both (Vᵀz, Vᵀε̂). For z this is the same distribution; for ε̂ ours is the Eq. 51 of
  the paper. For the diagonal operators (masks, denoising) the two coincide.
* Operators without an SVD but with an exact pseudo-inverse (attribute ``exact_pinv``) use x̂₀ = x₀ − A⁺(A x₀ − y₋₁)
  and the noise-free update (the simplified path; DDNM+'s Λ needs the spectrum, so σ_y is ignored there).
* ``sigma_start`` > 0 (not in the official code; preset "low-start"): start at the timestep whose noise level
  √((1−ᾱ_t)/ᾱ_t) is at most ``sigma_start`` (on [-1, 1]) from x = √ᾱ A⁺y₋₁ + √(1−ᾱ) z instead of x_T ~ N(0, I), with
  the `steps` timesteps spread evenly below it (DDRM's ``sigma_start``, the same grid). A measurement-consistent
  start at a low noise level is what made deepinv's DDRM 1–3 dB better than DDNM on a small prior
  (``benchmarks/deepinv_parity.py``; docs/benchmarks.md has the figures).
* Per-image generators for x_T and every z, so results do not depend on the batch.
* Needs a pixel prior (``needs`` has "pixel"): a latent prior has no linear operator in its latent space.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import Solver, SolverError, at_least, between, measurement_pm1, real_part, spectrum, to01
from .ddrm import ddrm_timesteps
from .dps import alphas_cumprod64


def schedule_jump(steps: int, travel_length: int, travel_repeat: int) -> list[int]:
    """RePaint's time-travel schedule on 0 … steps−1 (then −1), as ``get_schedule_jump``: going down one step at a
    time, and at every ``travel_length``-th step (below steps − travel_length) jumping back up ``travel_length``
    steps, ``travel_repeat − 1`` times. travel_length = travel_repeat = 1 gives steps−1, …, 0, −1."""
    jumps = {j: travel_repeat - 1 for j in range(0, steps - travel_length, travel_length)}
    t, times = steps, []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(travel_length):
                t += 1
                times.append(t)
    times.append(-1)
    return times


class DDNM(Solver):
    name = "ddnm"
    description = "DDNM/DDNM+ (Wang et al. 2023): DDIM steps with range/null-space rectification by A's SVD"
    needs = frozenset({"linear", "svd", "pixel"})
    stochastic = True
    defaults = {"steps": 100, "eta": 0.85, "sigma_y": -1.0, "travel_length": 1, "travel_repeat": 1, "rcond": 1e-3,
                "sigma_start": 0.0}
    presets = {
        "default": {"description": "as evaluated (evaluation.sh): 100 steps, η = 0.85, no time travel; DDNM+ when the "
                                   "measurement is noisy"},
        "ddnm+": {"sigma_y": -1.0, "description": "DDNM+ for noisy measurements (σ_y = the measurement's noise), "
                                                  "100 steps, η = 0.85"},
        "ddnm": {"sigma_y": 0.0, "description": "plain DDNM (hard data consistency, noise ignored) even for noisy "
                                                "measurements"},
        "low-start": {"sigma_start": 2.0,
                      "description": "DDNM+ from σ = 2 on [-1, 1] (1 on [0, 1]) and A⁺y instead of from T and noise; "
                                     "100 steps; not the official setting"},
        "time-travel": {"travel_length": 10, "travel_repeat": 3,
                        "description": "DDNM+ with RePaint-style time travel (l = 10, r = 3; 100 + 9·20 = 280 NFE; "
                                       "not the evaluated setting)"},
    }

    rules = {"eta": between(0, 1), "travel_length": at_least(1), "travel_repeat": at_least(1), "steps": at_least(1)}

    def sample(self, y: Tensor, op, prior, rng: Sequence[torch.Generator], progress=None) -> Tensor:
        p = self.params
        eta = float(p["eta"])
        steps = int(p["steps"])
        ac = alphas_cumprod64(prior)
        T = len(ac)
        if not 1 <= steps <= T:
            raise SolverError(f"DDNM steps must be between 1 and {T}, got {steps}.")
        grid = ddrm_timesteps(ac, steps, float(p["sigma_start"]))            # i·T//steps unless sigma_start > 0
        alpha = lambda t: 1.0 if t < 0 else float(ac[t])  # noqa: E731 - ᾱ_t with ᾱ_{−1} = 1 (``compute_alpha``)
        sigma01 = float(p["sigma_y"]) if p["sigma_y"] >= 0 else float(getattr(self, "noise", 0.0))
        sigma_y = 2.0 * sigma01                                            # on the [-1, 1] scale

        c = prior.card.channels
        shape = (y.shape[0], c, *op.image_shape[1:])
        x = rng.randn(shape, device=y.device)    # x_T ~ N(0, I)
        # A x = y₋₁ for x on [-1, 1]
        y_pm1 = measurement_pm1(y, op)
        if p["sigma_start"] > 0:  # a measurement-consistent start at a low noise level (not the official code)
            a_top = alpha(grid[-1])
            x0_start = 2 * real_part(op.A_pinv(y)).reshape(shape) - real_part(op.A_pinv(op.A(torch.ones_like(x[:1]))))
            x = a_top**0.5 * x0_start + (1 - a_top) ** 0.5 * x
        rectify = self._spectral(y_pm1, op, sigma_y, eta) if getattr(op, "has_svd", False) else self._pinv(y, op)

        times = schedule_jump(steps, int(p["travel_length"]), int(p["travel_repeat"]))
        pairs = list(zip(times[:-1], times[1:]))
        x0 = None
        for n_done, (i, j) in enumerate(pairs, 1):
            t, s = grid[i], (grid[j] if j >= 0 else -1)
            a_s = alpha(s)
            if s < t:  # a forward (denoising) step
                a_t = alpha(t)
                eps, _ = prior.model_output(x, torch.full((shape[0],), float(t), device=y.device))
                x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5                     # Eq. 12, no clamp
                x = rectify(x0, eps, a_s, rng)                                  # Eq. 17 + Eq. 51
            else:  # time travel back: re-noise the last unrectified x₀|t
                x = a_s**0.5 * x0 + (1 - a_s) ** 0.5 * rng.randn_like(x0)
            if progress:
                progress(n_done, len(pairs))
        return x

    # ------------------------------------------------------------------------------------------------------------
    def _spectral(self, y_pm1: Tensor, op, sigma_y: float, eta: float):
        """The rectify-and-renoise step x₀|t ↦ x_s with A's SVD (spectral coefficients of shape op's Vt output)."""
        s, keep, inv_s = spectrum(op, float(self.params["rcond"]))            # keep: s_i > 0 (range of Aᵀ)
        c_y = op.Ut(y_pm1) * inv_s                                             # Vᵀ A⁺ y₋₁
        root = (1 - eta**2) ** 0.5

        def step(x0: Tensor, eps: Tensor, a_s: float, rng) -> Tensor:
            a, sigma_t = a_s**0.5, (1 - a_s) ** 0.5
            z = rng.randn_like(x0)
            if sigma_y == 0:
                # x̂₀ = x₀ − A⁺(A x₀ − y₋₁); x_s = a x̂₀ + σ_t(η z + √(1−η²) ε̂)
                x0_hat = x0 - real_part(op.V(keep * (op.Vt(x0) - c_y)))
                return a * x0_hat + sigma_t * (eta * z + root * eps)
            # DDNM+: threshold σ_t vs a σ_y/s_i per mode
            noisy = keep & (sigma_t < a * sigma_y * inv_s)                     # σ_t < a σ_y/s_i: noise dominates
            lam = torch.where(noisy, s * (sigma_t * root / (a * sigma_y)), 1.0) * keep
            x0_hat = x0 - real_part(op.V(lam * (op.Vt(x0) - c_y)))                 # Eq. 17
            d1 = torch.where(keep & ~noisy, (sigma_t**2 - (a * sigma_y * inv_s) ** 2).clamp_min(0).sqrt(),
                             sigma_t * eta)
            d2 = torch.where(keep, 0.0, sigma_t * root)
            return a * x0_hat + real_part(op.V(d1 * op.Vt(z) + d2 * op.Vt(eps)))   # Eq. 51

        return step

    def _pinv(self, y: Tensor, op):
        """Rectification with an exact pseudo-inverse and no SVD: noise-free DDNM only (σ_y is ignored)."""
        eta = float(self.params["eta"])
        root = (1 - eta**2) ** 0.5

        def step(x0: Tensor, eps: Tensor, a_s: float, rng) -> Tensor:
            # x̂₀ = x₀ − A⁺(A x₀ − y₋₁) = x₀ − 2 A⁺(A((x₀+1)/2) − y)   (A⁺ of the [0, 1] operator)
            corr = op.A_pinv(op.A(to01(x0)) - y)
            x0_hat = x0 - 2 * real_part(corr)
            sigma_t = (1 - a_s) ** 0.5
            return a_s**0.5 * x0_hat + sigma_t * (eta * rng.randn_like(x0) + root * eps)

        return step
