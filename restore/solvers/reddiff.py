"""RED-Diff — variational posterior sampling, "regularisation by denoising diffusion" (Mardani et al., ICLR 2024),
as the official code runs it (``NVlabs/RED-diff``: ``algos/reddiff.py``, ``_configs/algo/reddiff.yaml``).

Algorithm (μ on the prior's [-1, 1] scale; ᾱ_t, ε̂ from the prior's discrete VP view)::

    μ = A⁺y                                              (Adam state m = v = 0; betas 0.9, 0.99)
    for t = t_1 > t_2 > … > t_S:                         t_i = ⌊T/S⌋·(S − i): 999, 998, …, 0 for S = T = 1000
        ε ~ N(0, I);  x_t = √ᾱ_t·μ + √(1−ᾱ_t)·ε
        ε̂ = ε_θ(x_t, t)                                  one network evaluation, no backprop through it
        loss = λ·w(σ_t)·mean((ε̂ − ε)·μ)  +  v·mean(|s·(A((μ+1)/2) − y)|²)/2      σ_t = √(1−ᾱ_t)/√ᾱ_t
        μ ← Adam(μ, ∇_μ loss)                             ∇ = λ·w·(ε̂−ε)/n_x + v·s²/(2 n_y)·∇_μ‖A((μ+1)/2) − y‖²
    return μ                                             (no clamp inside)

with w(σ) = σ for the default "linear" weighting (the code's ``snr_inv``; also sqrt, square, log = log(1+σ),
trunc_linear = min(σ, 1), power2over3, const), λ = ``grad_term_weight`` = 0.25, v = ``obs_weight`` = 1, lr = 0.1
(``reddiff.yaml``); the README example uses lr = 0.5 with 100 steps (preset "fast").

Scale: the official code works on [-1, 1] data with y = H(x) + 2σ_y·n (σ_y on [0, 1]). For our operators on
[0, 1] images the official [-1, 1] residual is exactly s = 2 times ours for every linear operator and HDR, so the
data term is written with s = 2 and the official lr and λ keep their balance. Phase retrieval is applied by RED-diff
to [-1, 1] data, by our operator to [0, 1] data — a different operator, not a rescaling — so there we use the
operator's own scale, s = 1.

Operators far from unit scale (``normalise``, default "auto"): for ‖AᵀA‖ above ``base.GAIN_LIMIT`` (CT) the data
term is that of the normalised operator, ‖A x − y‖²/‖AᵀA‖, so λ keeps its balance against it; no official task
reaches the limit; "off" disables it. For CT the normalised residual is summed, with a fixed balance
``CT_BALANCE``·v/n_x, not averaged over its V·M entries: that mean fell as 1/V and made RED-Diff's error grow with
the number of views (``_data_weight``).

Measurement noise σ_y (audited against ``NVlabs/RED-diff`` ``algos/reddiff.py`` and ``main.py``): it does not enter
RED-Diff. The official ``sample`` reads ``cfg.algo.sigma_y`` and never uses it, ``main.py`` only adds the noise to
y, and the data term is ``mean((y − H(x₀))²)/2`` times ``obs_weight`` v = 1 whatever the noise. This implementation
does the same: ``solve`` gives the solver its σ_y (``self.noise``) and RED-Diff ignores it, so its output is the same
whatever noise it is told (``tests/test_reddiff_noise.py``). What that costs: on ``denoise`` at σ = 0.1 (faces64,
4 faces) the fast preset ends 0.2–0.25 dB above the noisy input (its fixed point is the noise-free MAP, μ ≈ y; 10 or
20 steps of it end below the input), 20 steps with lr = 0.05 end 1.2–1.5 dB above it; lowering v to stand for a
larger σ_y (0.3/0.1/0.03 at 20 steps, lr 0.5) made it worse (Adam then follows the noisy ε-term). For strong noise
use a solver that takes σ_y (DDNM+, DAPS).

Gradients are written out instead of autograd: the regulariser's gradient is λ·w·(ε̂−ε)/n_x exactly as
``loss_noise.backward()`` gives it, and for a linear operator the data gradient s²/(2 n_y)·Aᵀ(A((μ+1)/2) − y) is
computed as (s²/(4 n_y))·Aᵀ(Aμ − ỹ) with the official [-1, 1] measurement ỹ = 2y − A(1) (one A and one Aᵀ per step,
one A(1) at the start); autograd through A is used only for nonlinear operators. Adam is the PyTorch update
(bias-corrected moments, ε = 1e-8), written out so the loop stays lean.

What it converges to (``tests/test_solvers_daps_reddiff.py``): with an exact denoiser for a Gaussian prior
N(m, Σ), E[ε̂ − ε] = σ_t(Σ + σ_t² I)⁻¹(μ − m), so the expected update at timestep t vanishes at the MAP for the prior
N(m, Σ + σ_t² I) and the Gaussian noise ρ_t² = λ·w(σ_t)·σ_t·n_y/(v·s²·n_x) (on our [0, 1] scale). The sweep ends at
σ₀ ≈ 0.01, where ρ is tiny (λ = 0.25: ρ ≈ 0.0025·√(n_y/n_x)): RED-Diff lands on the noise-free MAP. For noise-free
data that is the exact posterior mean; for noisy data it ignores σ_y (the mean of many runs matches this fixed point,
not the posterior mean). Single runs scatter around it, as Adam follows the noisy ε-term.

Deviations from the official code (all deliberate):
* the means are per image (n_x = pixels of one image, n_y = measured entries of one image) and the per-image losses
  are summed, so each image follows exactly the official single-image trajectory whatever the batch (the official
  batch mean divides every gradient by B, which Adam undoes only up to its ε);
* n_y counts only the entries that hold data (``op.noise_mask()``): RED-diff's inpainting operator returns the
  observed pixels only, ours returns the full image with zeros elsewhere;
* without a pseudo-inverse (phase retrieval) μ starts at 0 (mid-grey): the official code starts phase retrieval
  from its own |F⁻¹y| heuristic, which our operators do not provide;
* the sweep has exactly ``steps`` timesteps t_i = ⌊T/S⌋·(S − i), i = 1 … S (the official ``range(0, 1000, skip)``,
  identical when S divides T);
* the inactive official options (``sigma_x0`` = 0, ``awd`` = True, ``cond_awd`` = False, ``eta``) are not offered.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import (NORMALISE, Solver, SolverError, at_least, data_term_scale, measurement_pm1, one_of, positive, to01,
                  to_pm1)
# denoise_term_weight options of algos/reddiff.py, as functions of snr_inv = σ_t = √(1−ᾱ_t)/√ᾱ_t
WEIGHTINGS = {
    "linear": lambda s: s,
    "sqrt": lambda s: math.sqrt(s),
    "square": lambda s: s * s,
    "log": lambda s: math.log(s + 1.0),
    "trunc_linear": lambda s: min(s, 1.0),
    "power2over3": lambda s: s ** (2 / 3),
    "const": lambda s: 1.0,
}


def residual_scale(op) -> float:
    """s such that the official RED-diff residual is s·(A(x₀₁) − y) on our scale (see the module docstring)."""
    return 1.0 if op.spec.family == "phase" else 2.0


class REDDiffSolver(Solver):
    name = "reddiff"
    description = "RED-Diff: Adam on μ with the score-distillation regulariser λ·σ_t·(ε̂ − ε), t swept from T to 0"
    needs = frozenset({"pixel"})
    uses_grad = True  # autograd through nonlinear operators (never through the network)
    defaults = dict(steps=1000, lr=0.1, grad_term_weight=0.25, obs_weight=1.0, weighting="linear", normalise="auto")
    presets = {
        "default": dict(description="official reddiff.yaml: 1000 steps, lr 0.1, λ 0.25, linear (σ_t) weighting"),
        "fast": dict(steps=100, lr=0.5, description="the official README example: 100 steps, lr 0.5, λ 0.25"),
    }
    betas = (0.9, 0.99)
    adam_eps = 1e-8

    rules = {"weighting": one_of(*WEIGHTINGS), "steps": at_least(1), "lr": positive(), "normalise": one_of(*NORMALISE)}

    def sample(self, y, op, prior, rng, progress=None):
        p = self.params
        S, T = p["steps"], prior.T
        if S > T:
            raise SolverError(f"reddiff: steps must be at most the prior's {T} timesteps, got {S}.")
        s = residual_scale(op)
        lam, v_obs, weight = p["grad_term_weight"], p["obs_weight"], WEIGHTINGS[p["weighting"]]
        data_grad, data_coef = self._data_gradient(y, op, s)

        mu = self._initialise(y, op)
        n_x = mu[0].numel()
        n_y = _measured_entries(op, y).to(mu.device).reshape(-1, *([1] * (mu.dim() - 1)))
        # ∇ of v·mean(|s·r|²)/2 = (v/n_y)·(½∇‖s·r‖²); normalised operators (CT): see _data_weight
        obs_coef = _data_weight(v_obs * data_coef, op, mu.shape[0], mu.device, p["normalise"], n_x, n_y)

        m1, m2 = torch.zeros_like(mu), torch.zeros_like(mu)   # Adam moments
        b1, b2 = self.betas
        abar = prior.alphas_cumprod.to(mu.device)
        skip = T // S
        for i in range(1, S + 1):
            t = skip * (S - i)
            a = float(abar[t])
            eps = rng.randn_like(mu)
            x_t = math.sqrt(a) * mu + math.sqrt(1 - a) * eps   # x_t = √ᾱ_t·μ + √(1−ᾱ_t)·ε
            with torch.no_grad():
                eps_hat, _ = prior.model_output(x_t, torch.full((mu.shape[0],), float(t), device=mu.device))
            w_t = lam * weight(math.sqrt((1 - a) / a))          # λ·w(σ_t), σ_t = √(1−ᾱ_t)/√ᾱ_t
            # ∇_μ loss = λ·w·(ε̂ − ε)/n_x + v·(½∇‖s·(A((μ+1)/2) − y)‖²)/n_y
            g = (eps_hat - eps).mul_(w_t / n_x).add_(data_grad(mu).mul_(obs_coef))
            # Adam (PyTorch's update): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², μ ← μ − lr·m̂/(√v̂ + ε)
            m1.mul_(b1).add_(g, alpha=1 - b1)
            m2.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (m2.sqrt() / math.sqrt(1 - b2**i)).add_(self.adam_eps)
            mu.addcdiv_(m1, denom, value=-p["lr"] / (1 - b1**i))
            if progress:
                progress(i, S)
        return mu

    @staticmethod
    def _initialise(y: Tensor, op) -> Tensor:
        """μ₀ = A⁺y on [-1, 1]; 0 for operators without a pseudo-inverse (see the module docstring)."""
        try:
            x01 = op.A_pinv(y)
        except (NotImplementedError, ValueError):  # OperatorError is a ValueError
            return torch.zeros((y.shape[0], *op.image_shape), device=y.device)
        x01 = x01.real if x01.is_complex() else x01
        return to_pm1(x01.float()).contiguous()

    @staticmethod
    def _data_gradient(y: Tensor, op, s: float):
        """(g, c) with c·g(μ) = ½∇_μ ‖s·(A((μ+1)/2) − y)‖², per image.

        Linear operator: in the official variables ỹ = 2y − A(1) (the [-1, 1] measurement) and H = A,
        s·(A((μ+1)/2) − y) = (s/2)·(Hμ − ỹ), so the gradient is (s²/4)·Aᵀ(Aμ − ỹ) — with s = 2 exactly the official
        Hᵀ(Hμ − ỹ): one A and one Aᵀ per step. Nonlinear operators: autograd through A."""
        if op.linear:
            y_pm1 = measurement_pm1(y, op)
            return (lambda mu: op.A_adjoint(op.A(mu) - y_pm1)), s * s / 4

        def grad_autograd(mu: Tensor) -> Tensor:
            with torch.enable_grad():
                xr = mu.detach().requires_grad_(True)
                r = op.A(to01(xr)) - y
                r = torch.view_as_real(r) if r.is_complex() else r
                (g,) = torch.autograd.grad((0.5 * s * s) * r.square().sum(), xr)
            return g
        return grad_autograd, 1.0


#: CT: the data/regulariser balance c of RED-Diff on the normalised Radon transform, the same for every number of views
#: (see ``_data_weight``). Measured with the fast preset on held-out 128² slices (σ = 0.025): c = 8/16/32/64 gave
#: 29.3/30.5/30.6/29.7 dB at 30 views, 30.4/32.6/34.3/35.4 at 90 and 30.4/32.7/34.7/36.4 at 180 (one slice); c ∝ V
#: (c = V) overshoots at 180 views (29.7 dB, fitting the noise)
CT_BALANCE = 32.0


def _data_weight(v: float, op, batch: int, device, normalise: str, n_x: int, n_y: Tensor) -> Tensor:
    """v·w, per image (B, 1, 1, 1), with v·w·(½∇‖s·r‖²) the data term's gradient (v = obs_weight·data_coef).

    Official: w = 1/n_y, the gradient of v·mean(|s·r|²)/2 (n_x/n_y against the regulariser's mean over pixels). An
    operator normalised by ``data_term_scale`` (κ = 1/‖AᵀA‖: any linear operator with ``normalise=on``) keeps that
    mean of the normalised operator's residual, w = κ/n_y, so c·A restores as A does.

    A CT operator (it has ``views``) is the exception: both ‖AᵀA‖ and n_y = V·M grow in proportion to the number of
    views V, so κ/n_y fell as 1/V — 60 views weighed the data half as much as 30 did, and RED-Diff's error grew with
    the views (held-out slices: 27.5, 25.8, 24.2 dB at 30, 60, 90 views). There w = c·κ/n_x with the fixed balance
    c = ``CT_BALANCE``: the normalised residual summed as DPS and DAPS sum it, and a data weight that does not
    depend on V (the data itself still tells more with more views: ÃᵀÃ has more well-conditioned directions)."""
    kappa = data_term_scale(op, batch, device, normalise)
    official = v / n_y * kappa  # exactly the official arithmetic where κ = 1
    if getattr(op, "views", None):
        return torch.where(kappa != 1, v * CT_BALANCE / n_x * kappa, official)
    return official


def _measured_entries(op, y: Tensor) -> Tensor:
    """Per image, the number of measurement entries that hold data (shape (B,), float)."""
    mask = op.noise_mask()
    if mask is None:
        return torch.full((y.shape[0],), float(y[0].numel()))
    try:
        mask = torch.broadcast_to(mask, y.shape)
    except RuntimeError:
        return torch.full((y.shape[0],), float(y[0].numel()))
    return (mask != 0).reshape(y.shape[0], -1).sum(1).float().cpu()
