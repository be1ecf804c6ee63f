"""PSLD — Posterior Sampling with Latent Diffusion (Rout, Raoof, Daras, Caramanis, Dimakis & Shakkottai, NeurIPS
2023), as the official code runs it (``LituRout/PSLD``: ``stable-diffusion/ldm/models/diffusion/psld.py``
``DDIMSampler.ddim_sampling`` and ``p_sample_ddim`` — its ``general_inverse`` and ``inpainting`` branches, which
differ only in passing the mask — driven by ``scripts/inverse.py`` and ``run/*.sh``).

The paper's Algorithm 2 is a DDPM step on the latents followed by two gradient steps taken with respect to z_t:
the latent DPS step η_t∇‖y − A D(ẑ₀)‖² and the "gluing" step γ_t∇‖ẑ₀ − E(Aᵀy + (I − AᵀA) D(ẑ₀))‖², which pulls
ẑ₀ towards the encoding of the image that agrees with y on the range of A and with D(ẑ₀) off it. The official code
runs it as a DDIM sampler with plain (not squared) L2 norms and one combined gradient. Its loop, with D = decode
and E = encode of the prior's autoencoder (i runs over the kept DDIM timesteps from high to low)::

    z_T ~ N(0, I)
    for i = n−1 … 0  (ᾱ = ᾱ_{t_i}, ᾱ' = ᾱ_{t_{i−1}}, ᾱ_0 at i = 0 — LDM's ddim_alphas_prev):
        ε̂      = ε_θ(z_t, t_i)
        ẑ₀     = (z_t − √(1−ᾱ) ε̂)/√ᾱ                                   (no clipping)
        σ_t     = η √((1−ᾱ')/(1−ᾱ) · (1 − ᾱ/ᾱ'))
        z'      = √ᾱ' ẑ₀ + √(1 − ᾱ' − σ_t²) ε̂ + σ_t ε,   ε ~ N(0, I)     (DDIM; η = 0: deterministic)
        x̂      = D(ẑ₀)
        x̃      = A⁺y + (I − A⁺A) x̂                                      (the official A^T: see below)
        L       = ω ‖A x̂ + n' − y‖₂ + γ ‖E(x̃) − ẑ₀‖₂,   n' ~ N(0, σ_y² I)   (noise added to the prediction)
        z_{t−1} = z' − ∇_{z_t} L
    return D(z_0)

Timesteps: LDM's "uniform" DDIM rule, c = ⌊T/steps⌋, t = 1, 1+c, 1+2c, … (< T; a timestep t = T, which the official
code cannot index, is dropped). The official default is 1000 steps, i.e. c = 1 (any steps > T/2 gives c = 1 and all T
steps): LDM's rule then gives t = 1 … 1000, and PSLD's ``make_ddim_sampling_parameters`` subtracts 1 for the ᾱ
("to avoid index error at 1000"; its test, last t = number of steps, also fires for a single step) but not for the
network, which sees t = 1000 … 1 with ᾱ_{999} … ᾱ_0 — one step
off. Default here: the network sees the timestep of its ᾱ (t = 999 … 0); ``official_timestep_offset=True`` (preset
"official") restores the official pairing (the network at t + 1). ᾱ is taken in float64 (LDM's buffers are float32:
a rounding difference). At i = 0 (ᾱ' = ᾱ = ᾱ_0 with c = 1) the DDIM step leaves z unchanged and only the gradient
acts, as there.

Conventions and deliberate differences from the official code (each also stated where it happens):
* **Scale of the residual (ω).** The official code runs on [-1, 1] images and measurements; our operators act on
  [0, 1] images, and for a linear A (y = A(x₀₁) + n) the official residual A(x₋₁) − y₋₁ is exactly 2(A(x₀₁) − y).
  The ω-term is therefore the norm of 2(A((x̂+1)/2) − y) + 2σ_y n' (as ``dps.py``), so the official ω keep their
  meaning; a noise σ_y on [0, 1] is the official 2σ_y (the configs' σ = 0.05 is our 0.025).
* **Scale of the gluing term (γ).** It needs no translation: x̃ on [-1, 1], A⁺y₋₁ + (I − A⁺A)x₋₁, equals
  2(A⁺y + (I − A⁺A)x₀₁) − 1 exactly (A⁺A·1 cancels), so x̃ is computed on [0, 1] as x̂₀₁ + A⁺(y − A x̂₀₁) and
  mapped back; the norm is taken in latent space.
* **A⁺ instead of the official ``operator.transpose``.** The official code builds x̃ from the DPS operators'
  ``transpose``, which is the identity for inpainting (there ``forward`` is x ⊙ mask, so transpose∘forward = the mask
  = A⁺A and transpose(y) = A⁺y: exactly ours), nearest-neighbour upsampling for super-resolution (A⁺ of an area
  average; for its bicubic ``Resizer`` an approximation) and the identity for Gaussian and motion blur (x̃ = x̂ + y −
  A x̂, one Landweber step rather than a projection). Here x̃ is the paper's A⁺y + (I − A⁺A)x̂ with the operator's
  pseudo-inverse ``op.A_pinv`` (closed form for masks, SR, circular/separable blurs, denoising, single-coil MRI;
  conjugate gradients for the other linear operators; FBP for CT, an approximate A⁺), differentiated through by
  autograd as the official code differentiates through its ``transpose``. Same as the official code on inpainting;
  different (by design) on SR and deblurring.
* **Noise added to the prediction.** The official code passes A D(ẑ₀) through the task's ``noiser`` before the norm,
  i.e. it adds a fresh N(0, σ²) draw at every step (σ = the task's measurement noise). Kept (``noise_in_residual``,
  default True), drawn from the image's generator after the DDIM noise; with σ_y = 0 it vanishes.
* **Deterministic encoder.** ``get_first_stage_encoding`` *samples* the KL posterior for Stable Diffusion's KL
  autoencoder (mean + std·ε, a random draw each step) and takes the pre-quantisation latents for the VQ-f4 LDM; here
  ``prior.encode`` (the posterior mean for our KL autoencoders; ``LatentPrior`` notes why that loses nothing).
* **Per-image norms.** The official ``torch.linalg.norm`` spans the batch tensor (the official runs use batch size
  1); here L = Σ_b (ω‖r_b‖ + γ‖E(x̃_b) − ẑ₀_b‖), so each image gets its own gradient and a result does not depend on
  the batch. Every random draw (z_T, ε, n') comes from the image's generator.
* **Precision and conditioning.** The official script runs under CUDA autocast (float16 matmuls) and, for Stable
  Diffusion, with an empty prompt and classifier-free guidance 7.5 on identical (empty) conditionings, which is the
  unconditional ε̂ at twice the cost; here float32 and an unconditional prior.
* **Operators far from unit scale** (``normalise``, default "auto", our extension): for ‖AᵀA‖ above
  ``base.GAIN_LIMIT`` (CT's Radon transform) the ω-norm is taken of the normalised operator, ‖r‖/‖A‖, as in
  ``dps.py``; the gluing term is scale-free. No official CT task.

Measurement noise: besides n' (above), PSLD does not use σ_y: like DPS its plain-norm steps have a fixed length
whatever the residual, so how much noise is fitted depends on ω, γ and the number of steps.

Step sizes (``omega`` ω, ``gamma`` γ), 1000 DDIM steps and η = 0 everywhere (no run script sets ``--ddim_steps`` or
``--ddim_eta``): ``scripts/inverse.py`` defaults ω = 1, γ = 0.1 ("default"; the Stable Diffusion runs of SR ×4,
Gaussian and motion deblur and random inpainting use them). Per task, the runs with the unconditional FFHQ LDM
(``run/inverse_*_ldm.sh``, ``--ffhq256``: VQ-f4, 64×64×3 latents — the kind of prior ours are): SR ×4 ω = 0.9, γ = 0.1;
random and box inpainting, Gaussian and motion deblur ω = 0.1, γ = 0.1. The Stable Diffusion box-inpainting run
(``run/inverse_bip.sh``) uses ω = 0.1, γ = 0.01 ("sd-inpaint-box"). Tasks without a run use the defaults.

Cost: one network evaluation per step, with backprop through the UNet, the decoder and the encoder; per step one
decode, one encode, two A and one A⁺.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .base import (NORMALISE, Solver, SolverError, at_least, batch_norm, data_term_scale, latent_shape, one_of, to01,
                  to_pm1)
from .dps import alphas_cumprod64



def psld_timesteps(T: int, steps: int, official_offset: bool = False) -> tuple[list[int], list[int]]:
    """(ᾱ indices, network timesteps), increasing: LDM's uniform DDIM rule t = 1, 1+c, … (c = ⌊T/steps⌋). When the
    last t equals the number of timesteps (c = 1: t = 1 … T; or a single step, t = 1) PSLD's
    ``make_ddim_sampling_parameters`` takes ᾱ at t − 1; the network then sees the same t − 1 here, or with
    ``official_offset`` the official t. Otherwise a t = T (outside the schedule) is dropped."""
    if not 1 <= steps <= T:
        raise SolverError(f"psld steps must be between 1 and {T}, got {steps}.")
    c = T // steps
    ts = [t + 1 for t in range(0, T, c)]
    if ts[-1] == len(ts):                    # the official "subtract 1 … to avoid index error at 1000"
        idx = [t - 1 for t in ts]
        return idx, list(ts) if official_offset else list(idx)
    idx = [t for t in ts if t < T]
    return idx, list(idx)


def _has_pinv(op) -> bool:
    """Whether the operator implements a pseudo-inverse (the base ``Operator.A_pinv`` only raises)."""
    from operators.base import Operator

    inner = getattr(op, "_op", op)          # through solve()'s CountingOperator
    method = getattr(type(inner), "A_pinv", None)
    return callable(method) and method is not Operator.A_pinv


def _randn_like_measurement(y: Tensor, rng: Sequence[torch.Generator]) -> Tensor:
    """N(0, 1) per real entry of the measurement (real and imaginary parts for complex y), image i from rng[i]."""
    if y.is_complex():
        return torch.view_as_complex(rng.randn_like(torch.view_as_real(y)).contiguous())
    return rng.randn_like(y)


class PSLD(Solver):
    name = "psld"
    description = ("PSLD (Rout et al. 2023): latent DDIM + ω∇‖y − A D(ẑ₀)‖ + γ∇‖ẑ₀ − E(A⁺y + (I − A⁺A) D(ẑ₀))‖ "
                   "(gluing), backprop through UNet, decoder and encoder")
    needs = frozenset({"linear", "latent"})
    uses_grad = True
    defaults = {
        "steps": 1000,                      # DDIM steps (scripts/inverse.py --ddim_steps)
        "omega": 1.0,                       # ω: measurement term (--omega)
        "gamma": 0.1,                       # γ: gluing term (--gamma)
        "eta": 0.0,                         # DDIM η (--ddim_eta)
        "noise_in_residual": True,          # add N(0, σ_y²) to A D(ẑ₀) before the norm (the official ``noiser``)
        "normalise": "auto",                # ω-norm of A/‖A‖ for ‖AᵀA‖ > GAIN_LIMIT (CT); our extension
        "official_timestep_offset": False,  # c = 1: the network at t+1 for ᾱ_t (the official pairing)
    }
    presets = {
        "default": {"description": "scripts/inverse.py defaults: ω = 1, γ = 0.1, 1000 DDIM steps, η = 0"},
        "sr4": {"omega": 0.9, "gamma": 0.1, "description": "official LDM run (inverse_sr_ldm.sh): ω = 0.9, γ = 0.1"},
        "inpaint-random": {"omega": 0.1, "gamma": 0.1,
                           "description": "official LDM run (inverse_rip_ldm.sh): ω = 0.1, γ = 0.1"},
        "inpaint-box": {"omega": 0.1, "gamma": 0.1,
                        "description": "official LDM run (inverse_bip_ldm.sh): ω = 0.1, γ = 0.1"},
        "deblur-gauss": {"omega": 0.1, "gamma": 0.1,
                         "description": "official LDM run (inverse_gb_ldm.sh): ω = 0.1, γ = 0.1"},
        "deblur-motion": {"omega": 0.1, "gamma": 0.1,
                          "description": "official LDM run (inverse_mb_ldm.sh): ω = 0.1, γ = 0.1"},
        "sd-inpaint-box": {"omega": 0.1, "gamma": 0.01,
                           "description": "official Stable Diffusion box-inpainting run (inverse_bip.sh): ω = 0.1, "
                                          "γ = 0.01"},
        "official": {"official_timestep_offset": True,
                     "description": "the defaults with the official one-step timestep offset of the network "
                                    "(1000 steps)"},
    }

    rules = {"omega": at_least(0), "gamma": at_least(0), "eta": at_least(0), "normalise": one_of(*NORMALISE)}

    def check(self, op, prior) -> None:
        super().check(op, prior)
        if not _has_pinv(op):
            raise SolverError(f"solver 'psld' needs the pseudo-inverse A⁺ of operator '{op.spec.family}' for its "
                              f"gluing term, which it does not offer; use resample or daps, which need none.")

    # ----------------------------------------------------------------------------------------------------------------
    def sample(self, y: Tensor, op, prior, rng: Sequence[torch.Generator], progress=None) -> Tensor:
        with torch.enable_grad():
            return self._sample(y, op, prior, rng, progress)

    def _sample(self, y: Tensor, op, prior, rng, progress) -> Tensor:
        p = self.params
        omega, gamma, eta = float(p["omega"]), float(p["gamma"]), float(p["eta"])
        sigma_y = float(getattr(self, "noise", 0.0) or 0.0) if p["noise_in_residual"] else 0.0
        ac = alphas_cumprod64(prior)
        idx, net_t = psld_timesteps(len(ac), int(p["steps"]), bool(p["official_timestep_offset"]))
        n = len(idx)
        alphas = [float(ac[t]) for t in idx]                          # ᾱ at each kept timestep
        alphas_prev = [float(ac[0])] + alphas[:-1]                    # ᾱ' (LDM's ddim_alphas_prev)
        B = y.shape[0]
        # CT: the ω-norm of the normalised operator A/‖A‖ (data_term_scale), so ω keeps its unit-scale meaning
        norm_scale = data_term_scale(op, B, y.device, p["normalise"]).view(-1).sqrt()
        with torch.no_grad():
            pinv_y = op.A_pinv(y)                                     # A⁺y, on [0, 1]

        z = rng.randn((B, *latent_shape(op, prior, y.device)), device=y.device)
        for i in reversed(range(n)):
            a_t, a_prev = alphas[i], alphas_prev[i]
            z_in = z.detach().requires_grad_(True)
            eps, _ = prior.model_output(z_in, torch.full((B,), float(net_t[i]), device=y.device))
            # ẑ₀ = (z_t − √(1−ᾱ) ε̂)/√ᾱ
            z0 = (z_in - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            # z' = √ᾱ' ẑ₀ + √(1 − ᾱ' − σ_t²) ε̂ + σ_t ε
            sigma_t = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            with torch.no_grad():
                z_prev = math.sqrt(a_prev) * z0 + math.sqrt(max(1 - a_prev - sigma_t**2, 0.0)) * eps
                if sigma_t > 0:
                    z_prev = z_prev + sigma_t * rng.randn_like(z_prev)
            # x̂ = D(ẑ₀); the ω-term on the [-1, 1] scale: ‖A x̂₋₁ + n' − y₋₁‖ = ‖2(A x̂₀₁ − y) + 2σ_y n'‖
            x01 = to01(prior.decode(z0))
            ax = op.A(x01)
            residual = 2.0 * (ax - y)
            if sigma_y > 0:
                residual = residual + 2.0 * sigma_y * _randn_like_measurement(y, rng)
            # the gluing term: x̃ = A⁺y + (I − A⁺A) x̂ (on [0, 1], mapped to [-1, 1]),  ‖E(x̃) − ẑ₀‖
            glued = to_pm1(x01 + pinv_y - op.A_pinv(ax))
            loss = omega * batch_norm(residual) * norm_scale + gamma * batch_norm(prior.encode(glued) - z0)
            (grad,) = torch.autograd.grad(loss.sum(), z_in)
            # z_{t−1} = z' − ∇_{z_t} (ω‖·‖ + γ‖·‖)
            z = (z_prev - grad).detach()
            if progress:
                progress(n - i, n)
        with torch.no_grad():
            return prior.decode(z)

