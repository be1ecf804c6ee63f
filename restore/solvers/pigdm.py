"""ΠGDM — pseudo-inverse guided diffusion (Song, Vahdat, Mardani & Kautz, ICLR 2023), as the official code runs it
(``NVlabs/RED-diff``: ``algos/pgdm.py`` on ``algos/ddim.py``, ``_configs/algo/pgdm.yaml``).

Algorithm (the paper's ΠG guidance in the official DDIM loop; steps t → s on the grid t_k = k·⌊T/S⌋, s = the next
lower one, −1 after 0, with ᾱ_{−1} = 1; x on the prior's [-1, 1] scale, y₋₁ its measurement)::

    x_{t_S} = √ᾱ_t A⁺y₋₁ + √(1−ᾱ_t) z                                  (official init; z ~ N(0, I))
    for each step t → s:
        ε̂   = ε_θ(x_t, t)
        x̂₀  = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t                                     (Tweedie; no clamp)
        g    = ((y₋₁ − A x̂₀)ᵀ (r_t² A Aᵀ + σ_y² I)⁻¹ A ∂x̂₀/∂x_t)ᵀ · r_t²   (ΠG: a vector–Jacobian product)
        c1   = η √((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)),   c2 = √(1 − ᾱ_s − c1²)
        x_s  = √ᾱ_s x̂₀ + c1 z + c2 ε̂ + w_t g,           w_t = √ᾱ_s √ᾱ_t λ     (awd; z ~ N(0, I))
    return x at s = −1                                                     (= x̂₀ + √ᾱ_0 λ g of the last step)

with r_t² = 1 − ᾱ_t (the paper's VP choice) and λ = ``grad_term_weight``. In A's SVD A = U diag(s) Vᵀ the guidance
vector before the Jacobian is diagonal::

    r_t² Aᵀ(r_t² A Aᵀ + σ_y² I)⁻¹(y₋₁ − A x̂₀) = V[ s²/(s² + σ_y²/r_t²) ⊙ (Uᵀy₋₁/s − Vᵀx̂₀) ]

which for σ_y = 0 is A⁺y₋₁ − A⁺A x̂₀: the official ``mat = H_pinv(y_0) − H_pinv(H(x0_pred))`` exactly, and g is
``autograd.grad((mat.detach() * x0_pred).sum(), xt)``. With σ_y > 0 each mode's pull is damped by the Wiener factor
s²/(s² + σ_y²/r_t²): full strength early (r_t large), and at the end only where s ≫ σ_y. ``awd`` False is the
official non-adaptive form: w_t = (√ᾱ_s − c2 √ᾱ_t/√(1−ᾱ_t)) √ᾱ_t λ (the ε̂ change implied by the corrected x̂₀).

Defaults (``pgdm.yaml``): η = 0, λ = 1, awd True; 100 steps (the paper's tables and InverseBench; the RED-diff
``exp.num_steps`` default is 50). NFE = steps, each with a backpropagation through the network.

What the guidance is (and is not) for a Gaussian prior N(m, Σ): there ∂x̂₀/∂x_t = √ᾱ_t Σ(ᾱ_t Σ + (1−ᾱ_t) I)⁻¹ and
C_t = Cov(x₀ | x_t) = ((1−ᾱ_t)/√ᾱ_t)·∂x̂₀/∂x_t exactly, so the ΠG-corrected denoiser of the paper (Tweedie with the ΠG
score) is x̂₀ + C_t Aᵀ(r_t² AAᵀ + σ_y² I)⁻¹(y₋₁ − A x̂₀), while the exact E[x₀ | x_t, y] has A C_t Aᵀ in place of
r_t² A Aᵀ. They agree only when A C_t Aᵀ = r_t² A Aᵀ, e.g. a white prior of unit variance (C_t = (1−ᾱ_t) I), or in
modes the measurement leaves out. The official weight w_t is moreover ᾱ_t times the paper's Tweedie step
((1−ᾱ_t)/(√ᾱ_t r_t²) = 1/√ᾱ_t on ∂x̂₀/∂x_t A⁺(…)): weaker at large t, the same as t → 0. With awd the DDIM step
also keeps the unguided ε̂. So ΠGDM is not exact for a Gaussian prior with a coloured spectrum.
``tests/test_solver_pigdm.py`` checks both sides: on a white unit-variance prior, the Tweedie weight with awd = False
samples the exact posterior (noisy and noise-free; mean within MC error, spread 0.97–0.98), and on the coloured prior
the official settings give a sample mean 0.06 (SR ×2), 0.12 (random mask) of ‖m_post − μ‖ off the posterior mean,
0.39 for a noisy Gaussian blur (σ = 0.025), and on noisy denoising (η = 0) samples collapsed to 0.6 % of the
posterior spread.

Conventions and deliberate departures from the official code (each also stated where it happens):
* Operators act on [0, 1] images; with x on [-1, 1], A((x+1)/2) = y is A x = y₋₁ := 2y − A·1, so the solver works
  with y₋₁ and the [-1, 1] noise σ_y = 2σ (σ on [0, 1], the measurement's, as RED-diff's ``main.py`` adds
  ``randn·sigma_y·2``). ``sigma_y`` ≥ 0 overrides the measurement's σ; 0 is the official noise-free form.
* **The noisy form is ours to run.** The RED-diff code has only the noise-free form (its ``sigma_y`` adds noise to y
  in ``main.py`` and is not read by ``pgdm.py``). Preset "default" uses the paper's (r_t² AAᵀ + σ_y² I)⁻¹ when the
  measurement is noisy, scaled by r_t² so that σ_y = 0 is the official code; preset "official" ignores the noise.
* A⁺ is applied in the spectral basis, Vᵀ(A⁺y₋₁ − A⁺A x̂₀) = 1[s>0]·(Uᵀy₋₁/s − Vᵀx̂₀); singular values
  s ≤ ``rcond``·max s count as zero, like DDNM here and the official ``ZERO`` thresholds (1e-3 to 3e-2). Complex
  spectral pieces (MRI) give real images through ``real_part``.
* Operators with an exact pseudo-inverse but no SVD (attribute ``exact_pinv``) use A⁺ directly, 2A⁺(y − A((x̂₀+1)/2)),
  and the noise-free form whatever σ_y: the noisy form needs the spectrum.
* Timesteps: exactly ``steps`` of them, t_k = k·⌊T/S⌋ (the official ``range(0, T, skip)`` has one more when S does
  not divide T; identical for the default 100).
* ᾱ in float64 from the prior (the official code takes its float32 cumprod): differences of order 1e-7.
* Not offered: ``cond_awd`` (only scales a classifier's guidance, and there is no classifier), ``mcg`` (the MCG
  baseline's coefficient), the ``in2_*`` inpainting branch (RED-diff pastes y into the observed pixels of x̂₀ for its
  free-form mask sets; our masks follow its ``inp_`` path, without pasting) and the ``hdr`` contrast term.
* Per-image generators for the init noise and every z (drawn at every step, as the official ``randn_like``, even
  though c1 = 0 for η = 0), so results do not depend on the batch; ``mat_x`` is summed over the batch as officially,
  which gives each image its own gradient (the network treats images independently).
* Needs a pixel prior: a latent prior has no linear operator in its latent space.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .base import Solver, SolverError, at_least, between, measurement_pm1, real_part, spectrum, to01
from .dps import alphas_cumprod64


class PiGDM(Solver):
    name = "pigdm"
    description = "ΠGDM (Song et al. 2023): DDIM + pseudo-inverse guidance, a VJP of A⁺(y − A x̂₀) through the UNet"
    needs = frozenset({"linear", "svd", "pixel"})
    uses_grad = True
    defaults = {"steps": 100, "eta": 0.0, "grad_term_weight": 1.0, "awd": True, "sigma_y": -1.0, "rcond": 1e-3}
    presets = {
        "default": {"description": "official pgdm.yaml (100 steps, η = 0, λ = 1, awd); the paper's noisy guidance "
                                   "(r_t² AAᵀ + σ_y² I)⁻¹ when the measurement is noisy"},
        "official": {"sigma_y": 0.0, "description": "exactly the RED-diff code: noise-free guidance A⁺y − A⁺A x̂₀ "
                                                    "whatever the noise, 100 steps, η = 0, λ = 1, awd"},
    }

    rules = {"eta": between(0, 1), "steps": at_least(1)}

    def sample(self, y: Tensor, op, prior, rng: Sequence[torch.Generator], progress=None) -> Tensor:
        p = self.params
        eta, weight, steps = float(p["eta"]), float(p["grad_term_weight"]), int(p["steps"])
        ac = alphas_cumprod64(prior)
        T = len(ac)
        if steps > T:
            raise SolverError(f"pigdm steps must be at most the prior's {T} timesteps, got {steps}.")
        skip = T // steps
        alpha = lambda t: 1.0 if t < 0 else float(ac[t])  # noqa: E731 - ᾱ_t with ᾱ_{−1} = 1 (``Diffusion.alpha``)
        sigma01 = float(p["sigma_y"]) if p["sigma_y"] >= 0 else float(getattr(self, "noise", 0.0))
        sigma_y = 2.0 * sigma01                                               # on the [-1, 1] scale

        shape = (y.shape[0], prior.card.channels, *op.image_shape[1:])
        y_pm1 = measurement_pm1(y, op)                                         # A x = y₋₁ for x on [-1, 1]
        if getattr(op, "has_svd", False):
            pinv_y, guide = self._spectral(y_pm1, op, sigma_y)
        else:
            pinv_y, guide = self._pinv(y, y_pm1, op)

        times = [k * skip for k in range(steps)]                               # official: range(0, T, skip)
        t0 = times[-1]
        # x_{t_S} = √ᾱ A⁺y₋₁ + √(1−ᾱ) z   (``PGDM.initialize``)
        x = alpha(t0) ** 0.5 * pinv_y.reshape(shape) + (1 - alpha(t0)) ** 0.5 * rng.randn(shape, device=y.device)
        for n_done, k in enumerate(reversed(range(steps)), 1):
            t, s = times[k], (times[k - 1] if k > 0 else -1)
            a_t, a_s = alpha(t), alpha(s)
            c1 = eta * math.sqrt((1 - a_t / a_s) * (1 - a_s) / (1 - a_t))
            c2 = math.sqrt(max(1 - a_s - c1**2, 0.0))
            x = x.detach().requires_grad_(True)
            eps, _ = prior.model_output(x, torch.full((shape[0],), float(t), device=y.device))
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5                        # Tweedie, no clamp
            # g = (∂x̂₀/∂x_t)ᵀ r_t² Aᵀ(r_t² AAᵀ + σ_y²I)⁻¹(y₋₁ − A x̂₀)   (σ_y = 0: A⁺y₋₁ − A⁺A x̂₀)
            mat = guide(x0.detach(), 1 - a_t)
            (g,) = torch.autograd.grad((mat * x0).sum(), x)
            with torch.no_grad():
                coeff = self._weight(a_t, a_s, c2) * weight
                z = rng.randn_like(x)
                # x_s = √ᾱ_s x̂₀ + c1 z + c2 ε̂ + w_t g
                x = a_s**0.5 * x0.detach() + c1 * z + c2 * eps.detach() + coeff * g
            if progress:
                progress(n_done, steps)
        return x.detach()

    def _weight(self, a_t: float, a_s: float, c2: float) -> float:
        """w_t/λ: √ᾱ_s √ᾱ_t (awd), or (√ᾱ_s − c2 √ᾱ_t/√(1−ᾱ_t)) √ᾱ_t without awd (the official ``coeff``)."""
        coeff = a_s**0.5
        if not self.params["awd"]:
            coeff = coeff - c2 * a_t**0.5 / (1 - a_t) ** 0.5
        return coeff * a_t**0.5

    # ------------------------------------------------------------------------------------------------------------
    def _spectral(self, y_pm1: Tensor, op, sigma_y: float):
        """(A⁺y₋₁, guide) with A's SVD: guide(x̂₀, r²) = V[s²/(s² + σ_y²/r²) ⊙ (Uᵀy₋₁/s − Vᵀx̂₀)] on s > rcond·max s."""
        s, keep, inv_s = spectrum(op, float(self.params["rcond"]))            # keep: s_i > 0 (range of Aᵀ)
        c_y = op.Ut(y_pm1) * inv_s                                             # Vᵀ A⁺ y₋₁
        pinv_y = real_part(op.V(c_y))

        def guide(x0: Tensor, r2: float) -> Tensor:
            if sigma_y == 0:                                                   # A⁺y₋₁ − A⁺A x̂₀
                return real_part(op.V(keep * (c_y - op.Vt(x0))))
            lam = keep * s**2 / (s**2 + sigma_y**2 / r2)                        # r² s (r² s² + σ_y²)⁻¹ · s
            return real_part(op.V(lam * (c_y - op.Vt(x0))))

        return pinv_y, guide

    def _pinv(self, y: Tensor, y_pm1: Tensor, op):
        """(A⁺y₋₁, guide) with an exact pseudo-inverse and no SVD: the noise-free form only (σ_y is not used)."""
        pinv_y = real_part(op.A_pinv(y_pm1))

        def guide(x0: Tensor, r2: float) -> Tensor:
            # A⁺y₋₁ − A⁺A x̂₀ = 2 A⁺(y − A((x̂₀+1)/2))   (A⁺ of the [0, 1] operator)
            return 2 * real_part(op.A_pinv(y - op.A(to01(x0))))

        return pinv_y, guide
