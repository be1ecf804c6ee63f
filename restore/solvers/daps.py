"""DAPS — Decoupled Annealing Posterior Sampling (Zhang et al., CVPR 2025), as the official main branch runs it
(``zhangbingliang2019/DAPS``: ``sampler.py`` ``DAPS``/``LatentDAPS``, ``cores/scheduler.py``, ``cores/mcmc.py``).

Algorithm (variables in the EDM σ-space, x_σ = x₀ + σ·n, on the prior's [-1, 1] scale)::

    σ_0 > σ_1 > … > σ_{N−1} > σ_N = 0            poly-7 grid from σ_max to σ_min (N+1 points; σ_min is not visited)
    x ~ N(0, σ_0² I)
    for k = 0 … N−1:
        x̂₀ = PF-ODE(x, σ_k → σ_ode_min)             M Euler steps of dx/dσ = (x − D(x, σ))/σ   (M network evals)
        x₀ ~ p(x₀ | x, y) ∝ exp(−‖s·(A(x₀) − y)‖²/τ_eff²) · N(x₀; x̂₀, σ_k² I)   J Langevin (or HMC) steps from x̂₀
        x = x₀ + σ_{k+1}·n

Likelihood scale (our operators act on [0, 1] images, the official ones on [-1, 1] data):
* the official data term is ``Operator.loss`` = Σ (A(x) − y)² over the measurement — a sum of squares with no ½ —
  divided by τ² (so its force is 2× that of ‖·‖²/(2τ²); the legacy branch used the latter);
* for every operator but phase retrieval the official [-1, 1] residual is exactly 2× ours (A linear: A(x) on
  [-1, 1] = 2·A((x+1)/2) − A(1); HDR: clip(2x, −1, 1) = 2·hdr((x+1)/2) − 1), so we use s = 2 and the official
  step sizes lr and τ = 0.01 keep their meaning (τ_eff below is τ for noise-free data);
* DAPS applies phase retrieval to [0, 1] data (``x*0.5 + 0.5`` first), which our operator already does: s = 1.

Operators far from unit scale (``normalise``, default "auto"): CT's Radon transform has ‖AᵀA‖ in the thousands, so
the official lr (tuned, like every official task, for ‖AᵀA‖ ≤ 1) would make Langevin diverge. With ‖AᵀA‖ above
``base.GAIN_LIMIT`` the data gradient is divided by ‖AᵀA‖ — DAPS on the normalised operator A/‖A‖ and y/‖A‖, our
extension (none of the official repositories has a CT task). No official task reaches the limit; "off" disables it.

Measurement noise (``likelihood``: "auto" (default), "noise" or "official"). The official data term exp(−‖s·r‖²/τ²), r = A(x₀) − y on
our [0, 1] scale, is a Gaussian likelihood of std τ/(√2·s): with the official τ = 0.01 (every task, whatever its
noise) that is 0.0035 for s = 2, while the true likelihood of y = A(x) + n, n ~ N(0, σ_y² I) (σ_y on [0, 1], the
measurement's ``noise_sigma``, set by ``solve``) is exp(−‖r‖²/(2σ_y²)). Equating the two gives τ = √2·s·σ_y. So with
"noise" DAPS uses

    τ_eff = √(τ² + 2 s² σ_y²),   i.e.   exp(−‖s·r‖²/τ_eff²) = exp(−‖r‖²/(2(σ_y² + τ²/(2s²)))):

the likelihood of the measurement noise plus an independent Gaussian error of std τ/(√2·s) (variances of independent
Gaussian errors add). τ (default 0.01) is then a floor: for σ_y = 0 (or Poisson noise, which has no σ) τ_eff = τ and
DAPS is exactly the official one, the problem stays well-posed (a finite data weight); for σ_y ≫ τ/(√2·s) it is the
true likelihood. At the official noise σ_y = 0.025 (0.05 on [-1, 1]) τ_eff = 0.071, 7× the official τ: the official
configs sample a likelihood 7× too narrow, which fits the noise (on ``denoise`` at σ_y = 0.1, τ_eff = 0.28, and the
official τ returns the noisy input). With the normalised operator (κ = 1/‖AᵀA‖, below) the data term is
s²κ‖r‖²/τ_eff², so the noise part is taken in the same normalised units, τ_eff² = τ² + 2s²κσ_y² (per image): the
noise likelihood stays exact and τ keeps its unit-scale meaning. "official" uses the fixed τ (the official code,
whatever the noise).

Step size with the "noise" likelihood: η_k = lr·(decay)·τ_eff/τ. A Langevin step is stable while
η·(1/σ_k² + a·λ_max) < 2, λ_max = ‖AᵀA‖·κ, with the data weight a = (s²/2)·κ/τ_eff² = a_off·τ²/τ_eff², so a weaker
data force alone keeps every official lr stable — but the official lr was tuned for a_off: with it unchanged the chain
hardly moves towards the data any more (J·η·a·λ at the first level: 12.5 for SR×4 with τ, 0.24 with τ_eff at
σ_y = 0.025) and DAPS ignores the measurement instead of fitting its noise. Scaling η by r = τ_eff²/τ² keeps the
official relaxation in the data directions but mixes the prior directions r× more, where DAPS's N(x̂₀, σ_k² I) is
too wide (see "Accuracy" below): the sample picks up that excess variance. The official runs work because
those directions hardly move (J·η/σ_k² ≪ 1 at the late levels). η·τ_eff/τ = η·√r splits the mismatch evenly (each
direction off by √r); measured on 4 faces (DAPS-100, faces64; PSNR dB, noisy input or A⁺y first):

    task (σ_y)              A⁺y/noisy  official τ   τ_eff, lr×1   ×√r     ×r      best tried
    denoise (0.1)             20.43      20.44        16.03       22.47   21.39   23.38 (lr×10)
    sr4 (0.025)               22.84      23.20        15.66       20.70   18.66   20.70 (×√r)
    inpaint-random (0.025)     5.77      24.70        21.78       22.95   20.18   23.43 (lr×3.7)

(faces: ``sample_data/astronaut_face64.png`` and ``test/faces64`` 00000, 00100, 00200; seeds 0–3; lr×k set with
``lr=``; the ×√r column is the default.) The same rule scales the HMC step and latent DAPS's; those were not measured.

So on the official tasks at their noise level the correct likelihood costs DAPS 1.7–2.5 dB of PSNR (its samples are
less pinned to the data, and the Gaussian approximation shows), and so it does on MRI (4×, σ_y = 0.025, 3 held-out
``brain_mri128`` slices, DAPS-100: official τ 27.55 dB, noise 25.36, zero-filled 24.48), while on ``denoise`` it is
what makes DAPS denoise at all. The official τ works together with DAPS's over-wide prior step; where the operator
leaves a null space to the prior that pairing wins. Hence the default "auto": the noise likelihood on ``denoise``
(the identity: every direction is measured, and the fixed τ returns y), the official τ on every other operator.
"noise" and "official" force one or the other everywhere. The τ and the first step used are reported in the
result's parameters as ``tau_used`` and ``lr_used`` (one number, or one per image when they differ).

Latent priors (LatentDAPS, ``card.latent``): the same loop on latents z, with x̂₀, the Gaussian prior term and the
noise in latent space, and the data term through the decoder, ‖s·(A((Dec(z)+1)/2) − y)‖²/τ_eff²; as in the official
``LatentWrapper.gradient`` its latent gradient is clipped to [−1, 1] element-wise before the 1/τ_eff². The output is
Dec(z₀).

Closed-form Langevin (``closed_form``, default "auto"; our speed-up, the same law). For a linear operator the J
Langevin steps of a level are an affine map plus Gaussian noise: with H = I/σ_k² + a·AᵀA (a = (s²/2)/τ_eff², times
1/‖AᵀA‖ when normalised) and b = x̂₀/σ_k² + a·Aᵀỹ, each step is x ← (I − ηH)x + ηb + √(2η)ε, so from x = x̂₀

    x_J ~ N( T^J x̂₀ + (I − T^J) H⁻¹ b,   2η Σ_{j<J} T^{2j} ),    T = I − ηH.

When A has an SVD (A = U diag(s) Vᴴ, V orthonormal: inpainting, SR, separable or circular blur, single-coil MRI), H
is diagonal in V's basis with entries h = 1/σ_k² + a·s², and the law is drawn exactly with two transforms and one
noise draw per level instead of J steps (2J operator evaluations and J noise draws): in coefficients c = Vᴴx,

    c_J = m^J ĉ₀ + (1 − m^J) b̂/h + √q · Vᴴε,   m = 1 − ηh,  q = 2η Σ_{j<J} m^{2j} = 2η (1 − m^{2J})/(1 − m²),

computed in float64 (expm1/log1p where ηh is tiny: at σ = 100, η/σ² ≈ 1e-8). The output has exactly the law of the
J-step chain the official code runs — the same mean, the same covariance, including the discretisation bias of a
finite η and the unfinished mixing of a finite J — but a different draw for a given seed. "off" runs the J steps
(the official loop, also used for HMC, nonlinear operators, operators without an SVD and latent priors); "on"
refuses a combination the closed form cannot handle. With J = 1 both paths compute the same number.
(``tests/test_solvers_daps_reddiff.py`` compares the closed form's mean and covariance with the dense J-step
recursion, and the samples of both paths with DAPS's exact output law.)

Cost: N·M network evaluations (no backprop through the network); N·J data-gradient evaluations, each one A and one
Aᵀ for a linear operator (autograd through A — and the decoder for latent priors — otherwise); with the closed form
3 transforms per level instead.

Accuracy (``tests/test_solvers_daps_reddiff.py``): with an exact Gaussian denoiser, a linear operator and τ matched
to the noise, DAPS's output law is Gaussian and known in closed form, and our samples follow it. Against the exact
posterior, its mean is close (DAPS-1K schedule: within 0.06 posterior std, RMS) but its covariance is over-dispersed
(×1.4–1.7 in variance): N(x̂₀, σ_k² I) is wider than the true p(x₀ | x_t) in the directions the prior holds tightly
(variance σ_k²·P/(P + σ_k²) for a prior variance P), and each level adds that excess back before the next ODE shrinks
it. That is DAPS's own approximation, not an error of this code.

Deviations from the official code (all deliberate):
* the denoiser is the prior's own σ-space Tweedie denoiser ``prior.denoise`` (fractional timestep interpolated on
  the prior's discrete schedule), not DAPS's ``VPPrecond`` with the continuous β_min = 0.1, β_d = 19.9 time map;
* a NaN in one image does not zero the batch (the official MCMC returns zeros for all): each image runs on and
  ``solve()`` reports the images that ended non-finite;
* every random draw comes from the image's own generator, so a result does not depend on the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import (NORMALISE, Solver, SolverError, at_least, between, data_term_scale, measurement_pm1, one_of,
                  positive, task_of, to01)
CLOSED_FORM = ("auto", "on", "off")
LIKELIHOODS = ("auto", "noise", "official")

# ---------------------------------------------------------------------------------------------------------------------
# the official per-task MCMC settings (``configs/task/*.yaml``): J, lr, lr_min_ratio, momentum, per task group.
# keys are our operator presets; "inpaint-box" is DAPS's 128×128 box (our ``inpaint-box-daps`` has its margin 32)
_TASKS = {
    #                     pixel (Langevin)          pixel_hmc                       ldm (HMC)
    "sr4":             ((100, 1e-4, 0.01),    (12, 1.04e-4, 0.012, 0.90),   (24, 1.35e-4, 0.023, 0.86)),
    "inpaint-box":     ((100, 5e-5, 0.01),    (84, 1.15e-5, 0.014, 0.003),  (15, 9.02e-6, 0.13, 0.74)),
    "inpaint-random":  ((100, 1e-4, 0.01),    (11, 3.56e-5, 0.015, 0.80),   (38, 8.40e-6, 0.013, 0.92)),
    "deblur-gauss":    ((100, 1e-4, 0.01),    (82, 4.04e-5, 0.011, 0.10),   (35, 2.70e-6, 0.95, 0.95)),
    "deblur-motion":   ((100, 5e-5, 0.01),    (96, 3.69e-5, 0.01, 0.11),    (49, 2.4e-5, 0.041, 0.45)),
    "phase-retrieval": ((100, 5e-5, 0.01),    (62, 9.75e-6, 0.019, 0.73),   (65, 2.1e-5, 0.12, 0.41)),
    "hdr":             ((100, 2e-5, 0.01),    (100, 2.18e-5, 0.013, 0.23),  (38, 4.52e-6, 0.015, 0.58)),
}

# DAPS-1K (``configs/sampler/edm_daps.yaml`` and every command in ``commands/pixel_*.sh``): 200 annealing levels
# σ 100 → 0.1, 5 Euler PF-ODE steps to σ = 0.01 each
_PIXEL = dict(annealing_steps=200, ode_steps=5, sigma_max=100.0, sigma_min=0.1, ode_sigma_min=0.01)
# LatentDAPS-100 (``commands/ldm_*.sh``: 50 levels × 2 ODE steps; σ 10 → 0.1, ODE to σ = 0.001 as in
# ``configs/sampler/sd_edm_daps.yaml`` — the main branch's ``latent_edm_daps.yaml`` has the same values per
# reference-solvers.md §4.2; it was not in the stored copy of the repository we read)
_LATENT = dict(annealing_steps=50, ode_steps=2, sigma_max=10.0, sigma_min=0.1, ode_sigma_min=0.001)


def _task_presets() -> dict[str, dict]:
    presets = {}
    for task, (pixel, hmc, ldm) in _TASKS.items():
        j, lr, ratio = pixel
        presets[task] = dict(_PIXEL, mcmc="langevin", mcmc_steps=j, lr=lr, lr_min_ratio=ratio,
                             description=f"DAPS-1K, official '{task}' pixel Langevin settings (J={j}, lr={lr:g})")
        j, lr, ratio, m = hmc
        presets[f"{task}-hmc"] = dict(_PIXEL, mcmc="hmc", mcmc_steps=j, lr=lr, lr_min_ratio=ratio, momentum=m,
                                      description=f"DAPS-1K with the official '{task}' pixel HMC settings "
                                                  f"(J={j}, lr={lr:g}, momentum {m:g})")
        j, lr, ratio, m = ldm
        presets[f"latent-{task}"] = dict(_LATENT, mcmc="hmc", mcmc_steps=j, lr=lr, lr_min_ratio=ratio, momentum=m,
                                         description=f"LatentDAPS-100 for latent priors, official '{task}' HMC "
                                                     f"settings (J={j}, lr={lr:g}, momentum {m:g})")
    return presets


def poly_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> list[float]:
    """EDM's ρ-polynomial grid of n points from σ_max to σ_min (both included):
    σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + (i / (n - 1)) * (b - a)) ** rho for i in range(n)] if n > 1 else [float(sigma_max)]


def residual_scale(op) -> float:
    """s such that the official DAPS residual is s·(A(x₀₁) − y) on our scale (see the module docstring)."""
    return 1.0 if op.spec.family == "phase" else 2.0


def likelihood_for(op, choice: str) -> str:
    """"auto": the noise likelihood where the operator observes every direction of the image (``denoise``: with the
    fixed τ DAPS returns the noisy input), the official fixed τ elsewhere (measured better by 1.7–2.5 dB on SR×4,
    random inpainting and 4× MRI; see the module docstring)."""
    if choice != "auto":
        return choice
    return "noise" if op.spec.family == "denoise" else "official"


def effective_tau(tau: float, s: float, sigma_y: float, kappa: Tensor, likelihood: str = "noise") -> Tensor:
    """τ_eff per image (float64, shaped like ``kappa``): √(τ² + 2 s² κ σ_y²) for the "noise" likelihood, the fixed τ
    for "official" (see the module docstring). ``sigma_y`` on [0, 1]; ``kappa`` = 1/‖AᵀA‖ of the normalised operator,
    ones otherwise."""
    kappa = kappa.double()
    if likelihood == "official":
        return torch.full_like(kappa, float(tau))
    return (tau**2 + 2 * s * s * kappa * sigma_y**2).sqrt()


def _shown(tau: Tensor) -> float | list[float]:
    """τ_eff as the result's parameters show it: one number, or one per image when they differ."""
    values = [float(v) for v in tau.reshape(-1).cpu()]
    return values[0] if len(set(values)) == 1 else values


class DAPSSolver(Solver):
    steps_param = "annealing_steps"  # --steps sets the number of annealing levels
    name = "daps"
    description = "Decoupled Annealing Posterior Sampling: PF-ODE x̂₀ + Langevin/HMC on x₀ at each noise level"
    needs = frozenset()
    uses_grad = True  # autograd through nonlinear operators and latent decoders (never through the network)
    defaults = dict(_PIXEL, mcmc="langevin", mcmc_steps=100, lr=1e-4, lr_min_ratio=0.01, tau=0.01, momentum=0.9,
                    normalise="auto", mcmc_from_task=False, closed_form="auto", likelihood="auto")
    presets = {
        "daps-1k": dict(_PIXEL, mcmc_from_task=True,
                        description="DAPS-1K: 200 annealing levels × 5 ODE steps = 1000 NFE; the task's official "
                                    "pixel Langevin settings (J, lr, decay), else 100 steps at lr 1e-4"),
        # the official commands run pixel priors only as DAPS-1K; DAPS-100 is their LDM step count (50 × 2)
        "daps-100": dict(_PIXEL, annealing_steps=50, ode_steps=2, mcmc_from_task=True,
                         description="DAPS-100: 50 annealing levels × 2 ODE steps = 100 NFE (the step counts of "
                                     "the official LatentDAPS-100 commands) on the pixel schedule; the task's "
                                     "official pixel Langevin settings, else 100 steps at lr 1e-4"),
        **_task_presets(),
    }

    rules = {"mcmc": one_of("langevin", "hmc"), "annealing_steps": at_least(1), "ode_steps": at_least(1),
             "mcmc_steps": at_least(0), "lr": positive(), "tau": positive(), "momentum": between(0, 1, high_open=True),
             "normalise": one_of(*NORMALISE), "closed_form": one_of(*CLOSED_FORM), "likelihood": one_of(*LIKELIHOODS)}

    def __init__(self, preset=None, **overrides):
        super().__init__(preset, **overrides)
        p = self.params
        # mcmc_from_task (DAPS-1K / DAPS-100): the MCMC settings come from the operator's task at sampling time,
        # as the official configs pair every step count with the task's settings; explicit overrides win
        self._explicit = {k for k, v in overrides.items() if v is not None}
        self._base_mcmc = {k: p[k] for k in ("mcmc_steps", "lr", "lr_min_ratio")}
        if not (p["sigma_max"] > p["sigma_min"] > p["ode_sigma_min"] > 0):
            raise SolverError(f"daps: need sigma_max > sigma_min > ode_sigma_min > 0, got {p['sigma_max']:g}, "
                              f"{p['sigma_min']:g}, {p['ode_sigma_min']:g}.")

    # ----------------------------------------------------------------------------------------------------------------
    def sample(self, y, op, prior, rng, progress=None):
        latent = bool(getattr(prior.card, "latent", False))
        p = self.params_for(op, prior)  # mcmc_from_task: the task's settings (reported: the sidecar shows them)
        self.reported.update({k: v for k, v in p.items() if v != self.params[k]})
        N, M, J = p["annealing_steps"], p["ode_steps"], p["mcmc_steps"]
        s = residual_scale(op)
        why_not = closed_form_refusal(op, latent, p["mcmc"])
        if p["closed_form"] == "on" and why_not:
            raise SolverError(f"daps: closed_form=on needs a linear operator with an SVD, a pixel prior and Langevin "
                              f"steps, but {why_not}; use closed_form=auto or off.")
        spectral = data_grad = None
        # CT: the normalised operator A/‖A‖ (data_term_scale), so lr keeps its unit-scale meaning
        kappa = None if latent else data_term_scale(op, y.shape[0], y.device, p["normalise"])
        # the likelihood's τ per image: √(τ² + 2s²κσ_y²) ("noise") or τ ("official"); shown in the result's params
        likelihood = likelihood_for(op, p["likelihood"])
        tau = effective_tau(p["tau"], s, float(getattr(self, "noise", 0.0) or 0.0),
                            kappa.reshape(-1) if kappa is not None else torch.ones(y.shape[0], device=y.device),
                            likelihood)
        # "noise": the step size scales with τ_eff/τ (see the module docstring); per image only where τ_eff differs
        lr_scale = tau / p["tau"] if likelihood == "noise" else torch.ones_like(tau)
        self.reported.update(likelihood_used=likelihood, tau_used=_shown(tau), lr_used=_shown(p["lr"] * lr_scale))
        shape = self._state_shape(op, prior, latent, y.device)
        uniform = bool((lr_scale == lr_scale[0]).all())
        lr_scale = float(lr_scale[0]) if uniform else lr_scale.reshape(-1, *([1] * len(shape)))
        if p["closed_form"] != "off" and not why_not:
            # the J steps of a level drawn at once (same law): a = c·κ/τ_eff² with c = s²/2 as in _data_gradient
            spectral = SpectralLangevin(op, measurement_pm1(y, op), (s * s / 2) * kappa.reshape(-1) / tau**2)
        else:
            grad_fn, c = self._data_gradient(y, op, prior, s, latent)
            # the data weight per image, c·κ/τ_eff², shaped to multiply the gradient
            weight = c * (kappa.reshape(-1) if kappa is not None else 1.0) / tau**2
            data_grad = grad_fn, weight.float().reshape(-1, *([1] * len(shape)))

        # the annealing grid: N+1 poly-7 points, the first N kept, then 0 (EDMScheduler.discretize)
        sigmas = poly_sigmas(p["sigma_max"], p["sigma_min"], N + 1)[:N] + [0.0]
        x = rng.randn((y.shape[0], *shape), device=y.device) * sigmas[0]

        for k in range(N):
            sigma = sigmas[k]
            # 1. reverse PF-ODE (Euler) from σ_k down to σ_ode_min: x̂₀, the centre DAPS gives p(x₀ | x_t)
            with torch.no_grad():
                x0hat = self._pf_ode(x, prior, poly_sigmas(sigma, p["ode_sigma_min"], M + 1))
            # 2. MCMC on p(x₀ | x_t, y) with the Gaussian approximation p(x₀ | x_t) ≈ N(x̂₀, σ_k² I);
            #    the step size decays linearly to lr·lr_min_ratio: η_k = lr·(1 + k/(N+1)·(lr_min_ratio − 1)),
            #    times τ_eff/τ for the "noise" likelihood (a float, or a tensor of one value per image)
            eta = p["lr"] * (1 + k / (N + 1) * (p["lr_min_ratio"] - 1)) * lr_scale
            if spectral is not None:
                x0 = spectral.sample(x0hat, sigma, eta, J, rng)
            else:
                x0 = self._mcmc(x0hat, sigma, eta, J, data_grad, rng)
            # 3. forward diffusion to the next level: x_{k+1} = x₀ + σ_{k+1}·n   (σ_N = 0: the output is x₀)
            x = x0 + sigmas[k + 1] * rng.randn_like(x0) if sigmas[k + 1] > 0 else x0
            if progress:
                progress(k + 1, N)
        if latent:
            with torch.no_grad():
                x = prior.decode(x)
        return x

    def params_for(self, op, prior=None) -> dict:
        """The parameters ``sample`` uses on ``op``: with ``mcmc_from_task`` (DAPS-1K / DAPS-100) and a pixel prior,
        the task's official Langevin settings (J, lr, lr_min_ratio; 100 steps at 1e-4 for a task without any),
        explicit overrides winning; otherwise the parameters as set."""
        p = dict(self.params)
        latent = bool(getattr(getattr(prior, "card", None), "latent", False))
        if p["mcmc_from_task"] and not latent and p["mcmc"] == "langevin":
            task = _TASKS.get(task_of(op.spec))
            chosen = dict(zip(("mcmc_steps", "lr", "lr_min_ratio"), task[0])) if task else self._base_mcmc
            p.update({k: v for k, v in chosen.items() if k not in self._explicit})
        return p

    def auto_preset(self, op, prior=None):
        """The official settings for the operator's task: the pixel Langevin group, or for a latent prior (when the
        caller passes it) the LatentDAPS HMC group; None (DAPS-1K defaults) for tasks DAPS has no settings for."""
        task = task_of(op.spec)
        if prior is not None and getattr(prior.card, "latent", False):
            return f"latent-{task}" if f"latent-{task}" in self.presets else None
        return task if task in self.presets else None

    @staticmethod
    def _state_shape(op, prior, latent: bool, device) -> tuple[int, ...]:
        """The shape of one image's state: the image, or its latent (``prior.latent_shape`` or an encoded probe)."""
        if not latent:
            return tuple(op.image_shape)
        if hasattr(prior, "latent_shape"):
            return tuple(prior.latent_shape(tuple(op.image_shape[1:])))
        with torch.no_grad():
            return tuple(prior.encode(torch.zeros((1, *op.image_shape), device=device)).shape[1:])

    @staticmethod
    def _pf_ode(x: Tensor, prior, grid: list[float]) -> Tensor:
        """Euler on the probability-flow ODE dx/dσ = (x − D(x, σ))/σ along ``grid`` (len(grid) − 1 network evals)."""
        for s_cur, s_next in zip(grid[:-1], grid[1:]):
            d = (x - prior.denoise(x, s_cur)) / s_cur
            x = x + (s_next - s_cur) * d
        return x

    def _mcmc(self, x0hat: Tensor, sigma: float, eta, steps: int, data_grad, rng) -> Tensor:
        """J Langevin or (damped) HMC steps on log p(x₀|x_t,y) from x₀ = x̂₀, with the score
        ∇ log p = −∇_x ‖s·(A(x) − y)‖²/τ_eff² + (x̂₀ − x)/σ_k²  (``data_grad`` = (g, a_data): the gradient g and its
        weight per image, a_data = c·κ/τ_eff², so that the data term's gradient is a_data·g). ``eta``: the step, a
        float or one per image (B, 1, …)."""
        p = self.params
        grad_fn, a_data = data_grad
        a_data = a_data.to(x0hat.dtype)
        if not isinstance(eta, float):
            eta = eta.to(device=x0hat.device, dtype=x0hat.dtype)
        a_prior = 1.0 / sigma**2                                # score = a_prior·(x̂₀ − x) − a_data·g
        x = x0hat.clone()
        if p["mcmc"] == "langevin":
            noise_scale = math.sqrt(2 * eta) if isinstance(eta, float) else (2 * eta).sqrt()
            data_step = a_data * eta
            for _ in range(steps):
                g = grad_fn(x)
                # x ← x + η·score + √(2η)·ε  =  (1 − η a_prior)·x + η a_prior·x̂₀ − η a_data·g + √(2η)·ε   (in place)
                _axpy(x.mul_(1 - eta * a_prior), x0hat, eta * a_prior).addcmul_(g, data_step, value=-1.0)
                _axpy(x, rng.randn_like(x), noise_scale)
        else:
            m = p["momentum"]
            h = math.sqrt(eta) if isinstance(eta, float) else eta.sqrt()
            noise_scale = math.sqrt(2 * (1 - m))
            data_step = a_data * h
            v = rng.randn_like(x)                       # v₀ ~ N(0, I)
            for _ in range(steps):
                g = grad_fn(x)
                # v ← m·v + √η·score + √(2(1−m))·ε ;  x ← x + √η·v
                _axpy(_axpy(v.mul_(m), x0hat, h * a_prior), x, -h * a_prior).addcmul_(g, data_step, value=-1.0)
                v.add_(rng.randn_like(x), alpha=noise_scale)
                _axpy(x, v, h)
        return x

    @staticmethod
    def _data_gradient(y: Tensor, op, prior, s: float, latent: bool):
        """(g, c) with c·g(x) = ∇_x Σ |s·(A((img(x)+1)/2) − y)|² (the official ``Operator.loss``: a sum of squares,
        no ½), per image.

        Linear operator, pixel prior: in the official variables ỹ = 2y − A(1) (the [-1, 1] measurement),
        s·(A((x+1)/2) − y) = (s/2)·(A x − ỹ), so the gradient is (s²/2)·Aᵀ(A x − ỹ): one A and one Aᵀ per step.
        Otherwise autograd through A (and the decoder for latent priors, whose gradient is then clipped to [−1, 1] as
        in the official ``LatentWrapper.gradient``)."""
        if op.linear and not latent:
            y_pm1 = measurement_pm1(y, op)
            return (lambda x: op.A_adjoint(op.A(x) - y_pm1)), s * s / 2

        def grad_autograd(x: Tensor) -> Tensor:
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                img = prior.decode(xr) if latent else xr
                r = op.A(to01(img)) - y
                r = torch.view_as_real(r) if r.is_complex() else r
                (g,) = torch.autograd.grad((s * s) * r.square().sum(), xr)
            return g.clamp_(-1.0, 1.0) if latent else g
        return grad_autograd, 1.0


def _axpy(x: Tensor, t: Tensor, c) -> Tensor:
    """x += c·t in place, c a float or a tensor that broadcasts (one value per image)."""
    return x.add_(t, alpha=c) if isinstance(c, float) else x.addcmul_(t, c)


# ---------------------------------------------------------------------------------------------------------------------
# closed-form Langevin (see the module docstring)


def closed_form_refusal(op, latent: bool, mcmc: str) -> str | None:
    """Why the J Langevin steps cannot be drawn in closed form (None when they can)."""
    if mcmc != "langevin":
        return "the MCMC is HMC"
    if latent:
        return "the prior is latent (the data term goes through the decoder)"
    if not op.linear:
        return f"operator '{op.spec.family}' is not linear"
    if not getattr(op, "has_svd", False):
        return f"operator '{op.spec}' has no SVD"
    if op.image_dtype.is_complex:
        return "the images are complex"
    return None


def langevin_law(h: Tensor, eta, steps: int) -> tuple[Tensor, Tensor]:
    """For the scalar chain c ← m·c + η·b + √(2η)·ε, m = 1 − η·h (h > 0, float64), after J = ``steps`` steps:
    (m^J, q) with c_J ~ N(m^J c₀ + (1 − m^J)·b/h, q), q = 2η Σ_{j<J} m^{2j}. Accurate for tiny η·h (log1p/expm1:
    1 − m is not rounded away) and correct for η·h ≥ 1 (m ≤ 0: an oscillating or, past η·h = 2, diverging chain, as
    the iteration would)."""
    eh = eta * h
    small = eh < 1
    log_abs_m = torch.where(small, torch.log1p(-eh), torch.log((1 - eh).abs()))   # log|m| (−inf at m = 0)
    m_j = torch.where(small, torch.exp(steps * log_abs_m), (1 - eh) ** steps)
    two_l = 2 * log_abs_m                                       # log m²
    den = -torch.expm1(two_l)                                   # 1 − m²  (0 at |m| = 1)
    geo = torch.where(den != 0, -torch.expm1(steps * two_l) / torch.where(den != 0, den, 1.0),
                      torch.full_like(den, float(steps)))       # Σ_{j<J} m^{2j}
    return m_j, 2 * eta * geo


class SpectralLangevin:
    """J Langevin steps on the density with score (x̂₀ − x)/σ² − a·Aᵀ(A x − ỹ), drawn in closed form in the SVD
    basis of A (the module docstring has the derivation). ``a_data`` (B,): the data weight a per image (c·κ/τ²)."""

    def __init__(self, op, y_pm1: Tensor, a_data: Tensor):
        self.op = op
        lam = op.singulars().double().abs() ** 2                # s² per coefficient, (B|1, *spectral)
        self.aty = op.Vt(op.A_adjoint(y_pm1))                    # Vᴴ Aᵀ ỹ
        shape = (-1,) + (1,) * (self.aty.dim() - 1)
        self.a_lam = a_data.double().reshape(shape) * lam        # a·s², (B, *spectral)
        self.a = a_data.double().reshape(shape)

    def law(self, sigma: float, eta, steps: int) -> tuple[Tensor, Tensor, Tensor]:
        """(keep, towards, std), float32 per coefficient: x_J = V(keep·Vᴴx̂₀ + towards·VᴴAᵀỹ + std·Vᴴε). ``eta``:
        the step, a float or one per image."""
        if not isinstance(eta, float):
            eta = eta.to(device=self.a.device, dtype=torch.float64).reshape(-1, *([1] * (self.a.dim() - 1)))
        h = 1.0 / sigma**2 + self.a_lam                          # H's eigenvalues
        m_j, q = langevin_law(h, eta, steps)
        pull = (1 - m_j) / h                                     # (1 − m^J)/h, the weight of b
        keep = m_j + pull / sigma**2                             # m^J + (1 − m^J)/(σ²h)
        return keep.float(), (pull * self.a).float(), q.sqrt().float()

    def sample(self, x0hat: Tensor, sigma: float, eta, steps: int, rng) -> Tensor:
        keep, towards, std = self.law(sigma, eta, steps)
        noise = self.op.Vt(rng.randn_like(x0hat))
        return self.op.V(self.op.Vt(x0hat) * keep + self.aty * towards + std * noise)
