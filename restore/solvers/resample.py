"""ReSample — hard data consistency with latent diffusion (Song, Kwon, Zhang, Hu, Qu & Shen, ICLR 2024), as the
official code runs it (``soominkwon/resample``: ``ldm/models/diffusion/ddim.py`` ``DDIMSampler.resample_sampling``,
``pixel_optimization``, ``latent_optimization``, ``stochastic_resample``, ``p_sample_ddim``;
``ldm_inverse/condition_methods.py`` ``PosteriorSampling``; ``sample_condition.py``; ``reference-solvers.md`` §6).

Algorithm 1 of the paper as the code executes it (latents z of the prior's autoencoder, D = decode, E = encode;
i runs over the kept DDIM timesteps from high to low, ``index`` = n−1 … 0 is the official counter)::

    z_T ~ N(0, I)
    for index = n−1 … 0  (t = t_index, ᾱ = ᾱ_t, ᾱ' = ᾱ of the next, lower timestep):
        ε̂      = ε_θ(z_t, t)
        ẑ₀     = (z_t − √(1−ᾱ) ε̂)/√ᾱ                                    (Tweedie's formula; the DDIM pred_x0)
        z'      = √ᾱ' ẑ₀ + √(1−ᾱ') ε̂                                     (unconditional DDIM step, η = 0)
        z'      ← z' − ζ_t ∇_{z_t} ‖y − A(D(ẑ₀))‖₂,   ζ_t = 0.5·ᾱ          (latent DPS step, every step)
        if index ≤ n − ⌊n/3⌋ and index > 0 and index % skip == 0:        (hard data consistency, last ⅔)
            ẑ₀ ← ẑ₀ after k more unconditional DDIM steps from z'          (look-ahead, k = 5)
            middle third (index ≥ ⌊n/3⌋):  x̂ = argmin_x ‖y − A(x)‖² from D(ẑ₀),  ẑ₀(y) = E(x̂)     (pixel space)
            last third   (index <  ⌊n/3⌋):  ẑ₀(y) = argmin_z ‖y − A(D(z))‖² from ẑ₀               (latent space)
            σ_t²    = γ·(1−ᾱ')/(1−ᾱ)·(1 − ᾱ/ᾱ')                            (γ = 40: γ × the DDPM posterior variance)
            z'      ~ N( (σ_t² √ᾱ' ẑ₀(y) + (1−ᾱ') z')/(σ_t² + 1−ᾱ'),  σ_t²(1−ᾱ')/(σ_t² + 1−ᾱ') I )
                                                                          (stochastic resampling)
        z_{t'} = z'
    z₀ ← argmin_z ‖y − A(D(z))‖² from z₀                                   (a last latent optimisation)
    return D(z₀)

Timesteps: LDM's "uniform" DDIM discretisation ``make_ddim_timesteps``: c = ⌊T/steps⌋, t = 1, 1+c, 1+2c, … < T+1
(500 steps: 999, 997, …, 1), so a ``steps`` that does not divide T gives ⌈T/c⌉ steps, as there; ᾱ' of the last
step is ᾱ_0 (LDM's ``ddim_alphas_prev``), not 1. ``steps`` ≤ T/2 (with c = 1 LDM's rule would reach t = T).
The network sees the integer timestep t. ᾱ is taken in float64 (LDM keeps float32 buffers: a rounding difference).
Hard-consistency events for the official 500 steps: indices 330, 320, …, 10 (33 events): pixel space at 330 … 170
(17), latent space at 160 … 10 (16), plus the final latent optimisation.

The inner optimisations (``pixel_optimization``, ``latent_optimization``): AdamW (PyTorch defaults: betas 0.9, 0.999,
ε = 1e-8, **weight decay 0.01 active**) on the mean squared error over the measurement, lr 1e-2 and at most 2000
iterations in pixel space, lr 5e-3 and at most 500 iterations in latent space. Stopping, checked after each step on
the loss before it: the loss is below eps² = 1e-6 (both); in latent space also, from iteration 200 on, when the loss is
larger than it was 200 iterations earlier (a sliding-window plateau test). The official threshold is a fixed
eps = 1e-3 with the comment "needs tuning according to noise level for early stopping" — it is *not* tied to the
noise level: 1e-6 is far below the configs' noise MSE (σ = 0.01 on [-1, 1]: 1e-4), so the inner loops fit the noise
(exactly, for an operator onto its range such as SR or inpainting) or run until the cap / the plateau test rather
than stop at the noise. ``noise_stop`` (off by default; the rule that comment asks for) also stops an image once its
MSE is below the noise's expected MSE (2σ_y)²·ρ on the [-1, 1] scale (ρ = the fraction of measurement entries that
hold data, ``op.noise_mask()``; the discrepancy principle). ``tol`` replaces the 1e-6. σ_y enters nowhere else: with
noise_stop off (the default, the official behaviour) the result does not depend on the noise ReSample is told. On
``denoise`` at σ_y = 0.1 (faces64-latent, 4 faces) the fast preset, whose fits are capped, still denoises: 24.62 dB
from the noisy 20.43 (24.38 with noise_stop; ``tests/test_solvers_denoise.py``); the paper preset was not measured
there (on SR×4 at σ = 0.025 it fits the noise: ``docs/benchmarks-paper.md``).

Cost (official 500 steps): 500 network evaluations with backprop (through the UNet and the decoder) + 5 per event
(165) forward-only look-ahead evaluations; ≤ 17 × 2000 operator iterations in pixel space (17 decodes + 17 encodes)
and ≤ 17 × 500 decoder iterations with backprop in latent space. About 10 minutes per 256² image on an A100 (issue #6).

Conventions and deliberate differences from the official code (each also stated where it happens):
* **Scale of the residual.** The official code runs on [-1, 1] images and measurements; our operators act on [0, 1]
  images and for a linear A (y = A(x₀₁) + n) the official residual y₋₁ − A(x₋₁) is exactly 2(y − A((x+1)/2)). Both
  the DPS norm and the inner MSE use that [-1, 1]-scale residual 2(y − A((x+1)/2)) (as ``dps.py``), so ζ_t, the
  learning rates and the 1e-6 threshold keep their official meaning; the same factor 2 is used for nonlinear
  operators (exact for HDR, the magnitude for phase retrieval — see ``dps.py``).
* **Tweedie quirk.** The official ``p_sample_ddim`` returns, besides the DDIM pred_x0, a ``pseudo_x0`` =
  (z_t − (1−ᾱ)·ε̂)/√ᾱ — (1−ᾱ), not √(1−ᾱ) — and uses *that* for the DPS gradient and as the start of the hard
  consistency (after the look-ahead). It is not Tweedie's formula: it leaves (√(1−ᾱ) − (1−ᾱ))/√ᾱ · ε̂ of the
  predicted noise in (up to 0.30 ε̂, at ᾱ ≈ 0.62; it agrees with Tweedie only as ᾱ → 0 or 1). Default here: the
  correct Tweedie estimate (= pred_x0). ``official_tweedie_quirk=True`` restores the official expression. The DDIM update itself uses the correct pred_x0 either way, as in the official code.
* **Look-ahead indexing.** The official look-ahead step k calls the network at the next timestep t_{k+1} (where z'
  is) but takes ᾱ, ᾱ' of the step before (``index_ = total_steps − k − 1``), i.e. it treats z' as one step noisier
  than it is. Default here: the coefficients of the timestep the network sees; ``official_lookahead_offset=True``
  restores the official pairing.
* **Per-image everything.** The official DPS norm (``torch.linalg.norm``) and MSE span the batch tensor and the early
  stop is one decision for the batch (the official runs use batch size 1). Here the DPS term is Σ_b ‖r_b‖, the
  inner losses are per-image means (summed for the backward pass, so each image gets its own gradient), AdamW is the
  PyTorch update written out on the batch with a per-image "still running" mask (each image stops on its own loss),
  and every random draw comes from the image's generator: a result does not depend on the batch it is in.
* **Encoder scale.** After the pixel optimisation the code calls ``encode_first_stage`` (the VQ encoder without
  quantisation, no scale factor), while decoding divides by the scale factor; the official LDM has scale factor 1,
  where both agree. Here ``prior.encode`` (with the prior's scale and shift) is the inverse of ``prior.decode``.
* **Decoding** is the prior's ``decode``; the official VQ-f4 decoder quantises (straight-through gradient); our KL
  autoencoder has no codebook.
* The unused official branches (``sigma = 0.5`` for index < 0, the ``mask``/``x0`` RePaint path, classifier-free
  guidance, Poisson noise) are not offered. ``steps`` > T/2 is refused rather than reaching t = T.

Presets. The official task configs (``configs/tasks/*.yaml``: SR ×4, Gaussian and motion deblur, random inpainting)
differ only in the YAML ``scale``, which the sampler never reads (it passes ζ_t = 0.5·ᾱ_t), and in the data and noise;
γ, the splits, the cadence, k and the AdamW settings are hard-coded and the same for every task. So there is one
official preset ("default") and no per-task ones. "fast" (not in the paper) is a quick look: 100 DDIM steps (same
cadence skip = 10 and k = 5: hard consistency at indices 60, 50, 40 in pixel space and 30, 20, 10 in latent space),
at most 500 pixel and 50 latent iterations per event and in the final latent optimisation (each latent iteration
backprops through the decoder, which dominates the time on a CPU): 130 network evaluations; measured 33–37 s for a
64×64 image on one (shared) CPU core with a random prior of the faces64-latent size (``SmallAutoencoder`` defaults,
3.7 M parameters, 64×64×3 → 16×16×4; ADM "cpu64" UNet on the latents, 1.6 M), of which ~13 s are the 100 guided
steps (UNet + decoder with backprop, ~0.13 s each) and ~11 s the latent iterations (~0.11 s each). The official
preset on the same CPU would take up to ~20 minutes per image (17 × 500 latent iterations alone are ~15 minutes,
less where the plateau test stops them).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .base import Solver, SolverError, batch_norm, latent_shape, measurement_pm1, to01
from .dps import alphas_cumprod64



def ddim_timesteps(T: int, steps: int) -> list[int]:
    """LDM's uniform DDIM timesteps (``make_ddim_timesteps``, "uniform"): range(0, T, ⌊T/steps⌋) + 1, increasing.
    500 of 1000 gives 1, 3, …, 999. When ``steps`` does not divide T the rule can reach t = T, which does not exist
    (LDM fails there with an index error): that timestep is dropped."""
    if not 1 <= steps <= T // 2:
        raise SolverError(f"resample steps must be between 1 and {T // 2} (LDM's uniform DDIM spacing), got {steps}.")
    c = T // steps
    return [t + 1 for t in range(0, T, c) if t + 1 < T]


def hard_dc_events(n: int, skip: int = 10, splits: int = 3) -> dict[int, str]:
    """{index: "pixel" | "latent"}: the official counters (index = n−1 … 0) at which hard data consistency runs:
    index ≤ n − ⌊n/splits⌋, index > 0, index % skip == 0; pixel space while index ≥ ⌊n/splits⌋, latent below."""
    split = n // splits
    return {i: ("pixel" if i >= split else "latent") for i in range(n - 1, 0, -1)
            if i <= n - split and i % skip == 0}


def resample_variance(a_t: float, a_prev: float, gamma: float) -> float:
    """σ_t² = γ·(1−ᾱ')/(1−ᾱ)·(1 − ᾱ/ᾱ'): γ times the DDPM posterior variance β̃ of the step t → t' (the official
    ``sigma``, a variance despite its name)."""
    return gamma * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)


def stochastic_resample(z0_y: Tensor, z_prime: Tensor, a: float, var: float, noise: Tensor) -> Tensor:
    """Stochastic resampling (the paper's resampling step, the official ``stochastic_resample`` with a = ᾱ'):
    z ~ N( (σ²√a ẑ₀(y) + (1−a) z')/(σ² + 1 − a),  σ²(1−a)/(σ² + 1 − a) ), i.e. the product of N(√a ẑ₀(y), σ²) and
    N(z', 1−a) renormalised."""
    mean = (var * math.sqrt(a) * z0_y + (1 - a) * z_prime) / (var + 1 - a)
    return mean + math.sqrt(1.0 / (1.0 / var + 1.0 / (1 - a))) * noise


def x0_estimates(z: Tensor, eps: Tensor, a_t: float, quirk: bool = False) -> tuple[Tensor, Tensor]:
    """(pred_x0, pseudo_x0): the DDIM x̂₀ = (z − √(1−ᾱ) ε̂)/√ᾱ (Tweedie's formula) and the estimate ReSample uses
    for its guidance and hard consistency: the same, or with ``quirk`` the official (z − (1−ᾱ) ε̂)/√ᾱ."""
    pred = (z - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    pseudo = (z - (1 - a_t) * eps) / math.sqrt(a_t) if quirk else pred
    return pred, pseudo


def adamw_minimise(var: Tensor, loss_fn: Callable[[Tensor], Tensor], lr: float, iters: int, weight_decay: float,
                   tol: Tensor, window: int = 0, betas=(0.9, 0.999), eps: float = 1e-8,
                   loss_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, int]:
    """AdamW (PyTorch's update, written out on the batch) on the per-image losses ``loss_fn(var)`` → (B,).

    Each image stops on its own, after the step of iteration ``itr``, when its loss (before that step) is below
    ``tol[b]``, or — with ``window`` > 0, from iteration ``window`` on — larger than its loss ``window`` iterations
    earlier (the official sliding-window plateau test). A stopped image keeps its value. ``loss_and_grad`` (optional)
    returns the losses and their gradient without autograd (a linear operator's explicit adjoint); otherwise the
    gradient is autograd's. Returns (var, iterations run)."""
    b1, b2 = betas
    x = var.detach().clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    all_active = True
    shape = (-1,) + (1,) * (x.dim() - 1)
    history: list[Tensor] = []
    done = 0
    for itr in range(iters):
        if loss_and_grad is not None:
            loss, g = loss_and_grad(x)
        else:
            xg = x.requires_grad_(True)
            loss = loss_fn(xg)
            (g,) = torch.autograd.grad(loss.sum(), xg)
            x = xg.detach()
        with torch.no_grad():
            step = itr + 1
            # m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  x ← x(1 − lr·wd) − lr/(1−β1ˢ) · m/(√v/√(1−β2ˢ) + ε)
            if not all_active:   # stopped images keep their values (and their moments)
                before = (x.clone(), m.clone(), v.clone())
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = v.sqrt().div_(math.sqrt(1 - b2**step)).add_(eps)
            x.mul_(1 - lr * weight_decay).addcdiv_(m, denom, value=-lr / (1 - b1**step))
            if not all_active:
                keep = active.reshape(shape)
                x, m, v = (torch.where(keep, new, old) for new, old in zip((x, m, v), before))
            cur = loss.detach()
            stop = cur < tol
            if window > 0:
                history.append(cur)
                if itr >= window:
                    stop = stop | (history[itr - window] < cur)
            active = active & ~stop
        done = itr + 1
        n_active = int(active.sum())
        if n_active == 0:
            break
        all_active = n_active == x.shape[0]
    return x.detach(), done


class ReSample(Solver):
    name = "resample"
    description = ("ReSample (Song et al. 2024): latent DDIM + latent DPS, hard data consistency (pixel/latent "
                   "optimisation) and stochastic resampling")
    needs = frozenset({"latent"})
    uses_grad = True
    defaults = {
        "steps": 500,                     # DDIM steps (η = 0)
        "skip": 10,                       # hard data consistency every `skip` steps (the official `index % 10`)
        "splits": 3,                      # none / pixel / latent thirds of the schedule
        "lookahead": 5,                   # k: unconditional DDIM steps before the hard consistency
        "gamma": 40.0,                    # σ_t² = γ × the DDPM posterior variance
        "dps_scale": 0.5,                 # ζ_t = dps_scale·ᾱ_t
        "pixel_lr": 1e-2,
        "pixel_iters": 2000,
        "latent_lr": 5e-3,
        "latent_iters": 500,              # also the final latent optimisation
        "window": 200,                    # latent plateau test: stop when the loss exceeds that of `window` ago
        "tol": 1e-6,                      # stop when the [-1, 1]-scale MSE < tol (official eps² = 1e-3²)
        "weight_decay": 0.01,             # AdamW's default, active in the official code
        "noise_stop": False,              # also stop at the noise's expected MSE (2σ_y)²·ρ (not the official code)
        "official_tweedie_quirk": False,  # (1−ᾱ)ε̂ instead of √(1−ᾱ)ε̂ in the x̂₀ used for guidance and consistency
        "official_lookahead_offset": False,  # the official one-step offset of ᾱ in the look-ahead
    }
    presets = {
        "default": {"description": "official: 500 DDIM steps, latent DPS ζ = 0.5ᾱ_t, hard consistency every 10 steps "
                                   "in the last two thirds (pixel AdamW lr 1e-2 ≤ 2000 it., latent AdamW lr 5e-3 ≤ "
                                   "500 it.), k = 5 look-ahead, γ = 40; correct Tweedie x̂₀"},
        "official": {"official_tweedie_quirk": True, "official_lookahead_offset": True,
                     "description": "the official code including its quirks: (1−ᾱ)ε̂ pseudo-x̂₀ and the look-ahead's "
                                    "one-step ᾱ offset"},
        "fast": {"steps": 100, "pixel_iters": 500, "latent_iters": 50,
                 "description": "not in the paper, a quick look: 100 DDIM steps (hard consistency at 6 events), ≤ 500 "
                                "pixel and ≤ 50 latent iterations per event; 130 NFE"},
    }

    def __init__(self, preset: str | None = None, **overrides):
        super().__init__(preset, **overrides)
        p = self.params
        for key in ("skip", "splits"):
            if p[key] < 1:
                raise SolverError(f"resample {key} must be at least 1, got {p[key]}.")
        for key in ("lookahead", "pixel_iters", "latent_iters", "window"):
            if p[key] < 0:
                raise SolverError(f"resample {key} must be zero or positive, got {p[key]}.")
        if not (p["gamma"] > 0 and p["pixel_lr"] > 0 and p["latent_lr"] > 0):
            raise SolverError("resample gamma, pixel_lr and latent_lr must be positive.")
        if not (p["dps_scale"] >= 0 and p["tol"] >= 0 and p["weight_decay"] >= 0):
            raise SolverError("resample dps_scale, tol and weight_decay must be zero or positive.")

    # ----------------------------------------------------------------------------------------------------------------
    def sample(self, y: Tensor, op, prior, rng: Sequence[torch.Generator], progress=None) -> Tensor:
        with torch.enable_grad():
            return self._sample(y, op, prior, rng, progress)

    def _sample(self, y: Tensor, op, prior, rng, progress) -> Tensor:
        p = self.params
        quirk = bool(p["official_tweedie_quirk"])
        ac = alphas_cumprod64(prior)
        ts = ddim_timesteps(len(ac), int(p["steps"]))
        n = len(ts)
        alphas = [float(ac[t]) for t in ts]                                # ᾱ at each kept timestep
        alphas_prev = [float(ac[0])] + alphas[:-1]                         # ᾱ' (LDM's ddim_alphas_prev)
        events = hard_dc_events(n, int(p["skip"]), int(p["splits"]))
        B = y.shape[0]
        tol = self._tolerance(y, op)
        data = _Data(y, op, prior)

        z = rng.randn((B, *latent_shape(op, prior, y.device)), device=y.device)
        for i in range(n):
            index = n - 1 - i
            a_t, a_prev = alphas[index], alphas_prev[index]
            # 1. unconditional DDIM step (η = 0): ẑ₀ = (z_t − √(1−ᾱ)ε̂)/√ᾱ,  z' = √ᾱ' ẑ₀ + √(1−ᾱ') ε̂
            z_in = z.detach().requires_grad_(True)
            eps, _ = prior.model_output(z_in, torch.full((B,), float(ts[index]), device=y.device))
            pred, pseudo = x0_estimates(z_in, eps, a_t, quirk)
            # 2. latent DPS step: z' ← z' − ζ_t ∇_{z_t} ‖y − A(D(ẑ₀))‖,  ζ_t = 0.5·ᾱ_t (the YAML scale is unused)
            norm = batch_norm(data.residual(prior.decode(pseudo)))
            (grad,) = torch.autograd.grad(norm.sum(), z_in)
            with torch.no_grad():
                z = math.sqrt(a_prev) * pred.detach() + math.sqrt(1 - a_prev) * eps.detach()
                z = z - float(p["dps_scale"]) * a_t * grad
            pseudo = pseudo.detach()
            # 3. hard data consistency + stochastic resampling at the events
            kind = events.get(index)
            if kind is not None:
                z0 = self._lookahead(z, pseudo, i, n, ts, alphas, alphas_prev, prior, quirk)
                if kind == "pixel":
                    # x̂ = argmin_x ‖y − A(x)‖² from D(ẑ₀) (AdamW lr 1e-2, ≤ 2000 it.), then ẑ₀(y) = E(x̂)
                    with torch.no_grad():
                        x_start = prior.decode(z0)
                    x_hat, _ = adamw_minimise(x_start, data.mse, float(p["pixel_lr"]), int(p["pixel_iters"]),
                                              float(p["weight_decay"]), tol,
                                              loss_and_grad=data.mse_and_grad if data.linear else None)
                    with torch.no_grad():
                        z0_y = prior.encode(x_hat)
                else:
                    # ẑ₀(y) = argmin_z ‖y − A(D(z))‖² from ẑ₀ (AdamW lr 5e-3, ≤ 500 it., plateau test)
                    z0_y = self._latent_opt(z0, data, tol)
                var = resample_variance(a_t, a_prev, float(p["gamma"]))       # σ_t² = 40·β̃
                with torch.no_grad():
                    z = stochastic_resample(z0_y.detach(), z, a_prev, var, rng.randn_like(z))
            if progress:
                progress(i + 1, n)
        # the final latent optimisation from z₀, then decode
        z = self._latent_opt(z, data, tol)
        with torch.no_grad():
            return prior.decode(z)

    # ----------------------------------------------------------------------------------------------------------------
    def _lookahead(self, z: Tensor, pseudo: Tensor, i: int, n: int, ts, alphas, alphas_prev, prior,
                   quirk: bool) -> Tensor:
        """ẑ₀ after k unconditional DDIM steps from z' (official loop k = i … min(i+k, n−1) − 1; the network sees
        the next timestep t_j, j = n−2−k). Without steps (k = 0) the ẑ₀ of the current step."""
        offset = bool(self.params["official_lookahead_offset"])
        B = z.shape[0]
        with torch.no_grad():
            for k in range(i, min(i + int(self.params["lookahead"]), n - 1)):
                j = n - 2 - k                                  # index of the timestep z is at
                c = j + 1 if offset else j                     # official: ᾱ of index_ = n−1−k = j+1
                eps, _ = prior.model_output(z, torch.full((B,), float(ts[j]), device=z.device))
                pred, pseudo = x0_estimates(z, eps, alphas[c], quirk)
                z = math.sqrt(alphas_prev[c]) * pred + math.sqrt(1 - alphas_prev[c]) * eps
        return pseudo

    def _latent_opt(self, z0: Tensor, data: "_Data", tol: Tensor) -> Tensor:
        p = self.params
        z, _ = adamw_minimise(z0, lambda z: data.mse(data.prior.decode(z)), float(p["latent_lr"]),
                              int(p["latent_iters"]), float(p["weight_decay"]), tol, window=int(p["window"]),
                              loss_and_grad=data.decoded_mse_and_grad if data.linear else None)
        return z

    def _tolerance(self, y: Tensor, op) -> Tensor:
        """Per-image stopping threshold on the [-1, 1]-scale MSE: ``tol``, or with ``noise_stop`` at least the noise's
        expected MSE (2σ_y)²·ρ (ρ: the fraction of measurement entries holding data)."""
        p = self.params
        tol = torch.full((y.shape[0],), float(p["tol"]), device=y.device)
        sigma = float(getattr(self, "noise", 0.0) or 0.0)
        if p["noise_stop"] and sigma > 0:
            tol = torch.maximum(tol, (2 * sigma) ** 2 * _data_fraction(op, y))
        return tol



class _Data:
    """The measurement terms on the official [-1, 1] scale: residual 2(y − A((x+1)/2)) and its per-image MSE."""

    def __init__(self, y: Tensor, op, prior):
        self.y, self.op, self.prior = y, op, prior
        self.linear = bool(op.linear)  # the explicit gradients below need A to be linear
        if self.linear:
            self.y_pm1 = measurement_pm1(y, op)       # ỹ = 2y − A(1): the residual is ỹ − A x

    def residual(self, x: Tensor) -> Tensor:
        return 2.0 * (self.y - self.op.A(to01(x)))

    @staticmethod
    def _real_entries(r: Tensor) -> Tensor:
        """(B, n): the n real measurement entries of each image's residual (real and imaginary parts if complex)."""
        r = torch.view_as_real(r) if r.is_complex() else r
        return r.reshape(r.shape[0], -1)

    def mse(self, x: Tensor) -> Tensor:
        return self._real_entries(self.residual(x)).pow(2).mean(dim=1)

    def mse_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """For a linear A: the MSE of r = ỹ − A x over the n real measurement entries and its gradient
        −(2/n)·Aᵀr (Re Aᴴr for complex measurements: ``A_adjoint``), one A and one Aᵀ without autograd."""
        with torch.no_grad():
            r = self.y_pm1 - self.op.A(x)
            flat = self._real_entries(r)
            return flat.square().mean(dim=1), self.op.A_adjoint(r) * (-2.0 / flat.shape[1])

    def decoded_mse_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The same for x = D(z): autograd only through the decoder (the vector-Jacobian product of D with the
        explicit image gradient), not through A and the loss."""
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            x = self.prior.decode(zg)
        loss, gx = self.mse_and_grad(x.detach())
        (gz,) = torch.autograd.grad(x, zg, grad_outputs=gx)
        return loss, gz


def _data_fraction(op, y: Tensor) -> Tensor:
    """ρ per image: the fraction of (real) measurement entries that hold data (``op.noise_mask()``; 1 without one)."""
    ones = torch.ones(y.shape[0], device=y.device)
    mask = op.noise_mask() if hasattr(op, "noise_mask") else None
    if mask is None:
        return ones
    try:
        m = mask.to(device=y.device, dtype=torch.float32)
        m = m.expand(y.shape[0] if m.shape[0] == 1 else m.shape[0], *y.shape[1:])
        return m.reshape(m.shape[0], -1).mean(dim=1) * ones
    except RuntimeError:  # a mask that does not broadcast to the measurement: count every entry
        return ones
