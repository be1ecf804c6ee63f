"""ReSample: schedules, a line-by-line transcription of the official loop, exactness against a Gaussian prior behind an
identity autoencoder, the Tweedie quirk, and smoke tests on a tiny random latent prior (autoencoder + latent UNet).

Exactness. A ``GaussianPrior``'s exact Wiener ε-network wrapped as a ``LatentPrior`` whose autoencoder is the identity
(on the LDM "ldm-linear" schedule) makes every piece of ReSample exact except the sampler's own approximations: its
x̂₀ is the exact posterior mean E[x₀ | z_t], encode/decode lose nothing, and the exact posterior p(x | y) is known
(``GaussianPrior.posterior``). Monte-Carlo tolerances: with K samples the error of their mean has expected norm
√(tr Σ_post / K), 0.06–0.07 of ‖m_post − μ_prior‖ for K = 64 on 1×8×8 (what the tests call ``mc``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import operators
from operators.seeding import generators
from priors.base import PriorCard
from priors.latent import LatentPrior
from restore.solvers import SolverError, get_solver, solve
from restore.solvers.base import randn_like_per_image
from restore.solvers.resample import ddim_timesteps, hard_dc_events, resample_variance, x0_estimates
from solver_testing import IdentityAE, gaussian_problem, run_sample, smoke_problem, tiny_latent_prior

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMA = 0.01   # measurement noise on [0, 1] (the official configs' 0.01 on [-1, 1] would be 0.005)
K = 64


# ---------------------------------------------------------------------------------------------------------------------
# priors for the tests


def gaussian_latent(spec: str, sigma_y: float = SIGMA, seed: int = 0):
    """(Gaussian prior, the same prior as a LatentPrior with an identity autoencoder on the ldm-linear schedule, op,
    x_true, y) on 1×8×8."""
    gauss, op, x_true, y = gaussian_problem(spec, sigma_y=sigma_y, seed=seed)
    card = PriorCard(name="gaussian-latent", image_size=8, channels=1, domain="synthetic Gaussian",
                     schedule="ldm-linear")
    prior = LatentPrior(gauss.net, card, IdentityAE())
    gauss.net.log_sigmas = prior._log_sigmas   # the Wiener ε-network follows the latent prior's schedule
    return gauss, prior, op, x_true, y




# a short run exercising every branch: n = 20 steps, hard consistency at 12, 9, 6 (pixel) and 3 (latent)
SHORT = dict(steps=20, skip=3, lookahead=2, pixel_iters=30, latent_iters=12, window=4)


# ---------------------------------------------------------------------------------------------------------------------
# schedules


def test_schedules_are_the_official_ones():
    ts = ddim_timesteps(1000, 500)
    assert len(ts) == 500 and ts[:3] == [1, 3, 5] and ts[-1] == 999
    # LDM's rule gives ⌈T/⌊T/S⌋⌉ = 334 timesteps for 300 steps, the last one t = 1000 (outside the schedule): dropped
    assert ddim_timesteps(1000, 100)[:2] == [1, 11] and len(ddim_timesteps(1000, 300)) == 333
    events = hard_dc_events(500)
    pixel = sorted(i for i, kind in events.items() if kind == "pixel")
    latent = sorted(i for i, kind in events.items() if kind == "latent")
    assert pixel == list(range(170, 331, 10)) and latent == list(range(10, 161, 10))   # 17 + 16 events
    assert hard_dc_events(100) == {60: "pixel", 50: "pixel", 40: "pixel", 30: "latent", 20: "latent", 10: "latent"}
    # γ = 40 × the DDPM posterior variance (1−ᾱ')/(1−ᾱ)·β
    a_t, a_prev = 0.5, 0.6
    assert math.isclose(resample_variance(a_t, a_prev, 40.0), 40 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    with pytest.raises(SolverError):
        ddim_timesteps(1000, 600)
    with pytest.raises(SolverError):
        get_solver("resample", official_tweedie_quirk="maybe")
    assert get_solver("resample", official_tweedie_quirk="false").params["official_tweedie_quirk"] is False


# ---------------------------------------------------------------------------------------------------------------------
# faithfulness: our loop against a direct transcription of ``resample_sampling`` (batch of 1)


def official_resample(prior, y, op, gens, steps, skip, inter_timesteps, pixel_iters, latent_iters, window):
    """``DDIMSampler.resample_sampling`` with ``p_sample_ddim``, ``PosteriorSampling.conditioning``,
    ``pixel_optimization``, ``latent_optimization`` (torch.optim.AdamW, MSELoss) and ``stochastic_resample``, on
    the official [-1, 1] scale: measurement y₋₁ = 2y − A(1), operator_fn = A (linear). The hard-coded counts are
    arguments here; random draws come from ``gens`` in the official order."""
    ac = prior.alphas_cumprod64.numpy()
    timesteps = ddim_timesteps(1000, steps)
    alphas = [float(ac[t]) for t in timesteps]
    alphas_prev = [float(ac[0])] + alphas[:-1]
    total = len(timesteps)
    measurement = 2 * y - op.A(torch.ones(1, *op.image_shape))
    operator_fn = op.A
    decode = prior.decode

    def p_sample_ddim(x, t, index):
        e_t = prior.net(x, torch.tensor([float(t)]))
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        x_prev = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev) * e_t
        pseudo_x0 = (x - (1 - a_t) * e_t) / math.sqrt(a_t)        # the (1 − ᾱ) quirk
        return x_prev, pred_x0, pseudo_x0

    def latent_optimization(z_init):
        z_init = z_init.detach().requires_grad_()
        opt = torch.optim.AdamW([z_init], lr=5e-3)
        losses = []
        for itr in range(latent_iters):
            opt.zero_grad()
            out = nn.MSELoss()(measurement, operator_fn(decode(z_init)))
            out.backward()
            opt.step()
            cur = out.detach().item()
            losses.append(cur)
            if itr >= window:
                if losses[0] < cur:
                    break
                losses.pop(0)
            if cur < 1e-6:
                break
        return z_init.detach()

    def pixel_optimization(x_prime):
        var = x_prime.detach().clone().requires_grad_()
        opt = torch.optim.AdamW([var], lr=1e-2)
        for _ in range(pixel_iters):
            opt.zero_grad()
            loss = nn.MSELoss()(measurement, operator_fn(var))
            loss.backward()
            opt.step()
            if loss < 1e-6:
                break
        return var.detach()

    rev = list(reversed(timesteps))
    img = randn_like_per_image(torch.empty(1, *prior.latent_shape(op.image_shape[1:])), gens)
    for i, step in enumerate(rev):
        index = total - i - 1
        a_t, a_prev = alphas[index], alphas_prev[index]
        img = img.detach().requires_grad_()
        out, pred_x0, pseudo_x0 = p_sample_ddim(img, step, index)
        norm = torch.linalg.norm(measurement - operator_fn(decode(pseudo_x0)))
        grad = torch.autograd.grad(norm, img)[0]
        img = (out - grad * (a_t * 0.5)).detach()
        split = total // 3
        if index <= total - split and index > 0:
            x_t = img.clone()
            if index % skip == 0:
                with torch.no_grad():
                    for k in range(i, min(i + inter_timesteps, len(rev) - 1)):
                        img, pred_x0, pseudo_x0 = p_sample_ddim(img, rev[k + 1], total - k - 1)
                sigma = 40 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
                if index >= split:
                    with torch.no_grad():
                        x_pix = decode(pseudo_x0.detach())
                    opt_var = pixel_optimization(x_pix)
                    with torch.no_grad():
                        z0 = prior.encode(opt_var)
                else:
                    z0 = latent_optimization(pseudo_x0.detach())
                noise = randn_like_per_image(z0, gens)
                img = ((sigma * math.sqrt(a_prev) * z0 + (1 - a_prev) * x_t) / (sigma + 1 - a_prev)
                       + noise * math.sqrt(1 / (1 / sigma + 1 / (1 - a_prev)))).detach()
    img = latent_optimization(img)
    with torch.no_grad():
        return decode(img)


@pytest.mark.parametrize("case", ["tiny-sr", "tiny-mask", "gaussian-sr"])
def test_matches_official_loop(case):
    """Every branch: the tiny random latent prior runs the inner loops to their caps; on the Gaussian prior behind
    the identity autoencoder the pixel loops stop on the 1e-6 threshold (after ~200 of 300 iterations) and the last
    latent loop on the plateau test (after 56 of 100)."""
    if case.startswith("tiny"):
        prior = tiny_latent_prior()
        _, op, _, y = smoke_problem("sr" if case == "tiny-sr" else "mask-random", sigma_y=SIGMA)
        iters = dict(pixel_iters=30, latent_iters=12)
    else:
        _, prior, op, _, y = gaussian_latent("sr:factor=2,kernel=bicubic")
        iters = dict(pixel_iters=300, latent_iters=100)
    ours = run_sample(get_solver("resample", preset="official", **dict(SHORT, **iters)), y, op, prior, [5],
                      noise=SIGMA)
    ref = official_resample(prior, y, op, generators([5], "solver/resample/0"), steps=20, skip=3,
                            inter_timesteps=2, window=4, **iters)
    # float32 rounding only (the [-1, 1] residual computed two ways, AdamW written out): measured ≤ 2.1e-6
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    # and the default (correct Tweedie, consistent look-ahead) is a different sampler: measured 0.14–0.15 apart
    if case == "tiny-sr":
        ours = run_sample(get_solver("resample", **dict(SHORT, **iters)), y, op, prior, [5], noise=SIGMA)
        assert float((ours - ref).abs().max()) > 1e-2


# ---------------------------------------------------------------------------------------------------------------------
# exactness against the Gaussian posterior (identity autoencoder)


def many(y: torch.Tensor, k: int = K) -> torch.Tensor:
    return y.expand(k, *y.shape[1:]).clone()


@pytest.mark.parametrize("spec", ["mask:kind=random,fraction=0.5", "sr:factor=2,kernel=bicubic"])
def test_consistent_and_near_the_posterior_mean(spec):
    gauss, prior, op, x_true, y = gaussian_latent(spec)
    noise_norm = float((op.A((x_true + 1) / 2) - y).norm())     # the realised ‖n‖
    mean, cov = gauss.posterior(y, op, SIGMA)
    scale = float((mean - gauss.mean_value).norm())                # the prior mean's error: 1 in relative units
    mc = float((cov[0].diagonal().sum() / K).sqrt()) / scale       # 0.062 (mask), 0.074 (sr)
    err_pinv = float(((2 * op.A_pinv(y) - 1).double() - mean).norm()) / scale   # 1.70 (mask), 0.12 (sr)

    x = run_sample(get_solver("resample"), many(y), op, prior, range(K), noise=SIGMA)   # the official settings
    res = (op.A((x + 1) / 2) - y).reshape(K, -1).norm(dim=1)
    # hard data consistency: the official 1e-6 threshold fits y below the noise (measured ‖Ax̂ − y‖ ≤ 0.08 ‖n‖)
    assert float(res.max()) < 0.25 * noise_norm, (res.max(), noise_norm)
    # the mean of K samples: measured 0.09 (mask), 0.06 (sr) of ‖m_post − μ‖, i.e. the MC error plus a small bias;
    # 0.2 ≈ 3 MC errors, and closer than both the prior mean (1) and A⁺y (by ≥ 20 % for sr, where A⁺y is good)
    err = float((x.double().mean(0, keepdim=True) - mean).norm()) / scale
    assert err < 0.2 and err < 0.8 * err_pinv, (err, err_pinv, mc)
    # it samples: its spread is of the posterior's order (measured 0.73–0.77 of the posterior std)
    spread = float((x.double().var(0).sum() / cov[0].diagonal().sum()).sqrt())
    assert 0.4 < spread < 1.3, spread

    # noise-aware stopping (paper; not the official code): each fit stops once ‖Ax̂ − y‖ is below the expected noise
    # norm σ√m (m: measured entries; measured max 0.86–0.93, mean 0.45–0.85 of it), the mean as close as before
    mask = op.noise_mask()
    expected = SIGMA * math.sqrt(float(mask.expand_as(y).sum()) if mask is not None else y.numel())
    x = run_sample(get_solver("resample", steps=100, noise_stop=True), many(y, 32), op, prior, range(32),
                   noise=SIGMA)
    res = (op.A((x + 1) / 2) - y).reshape(32, -1).norm(dim=1)
    assert float(res.max()) < 1.02 * expected and float(res.mean()) > 0.3 * expected, (res, expected)
    err = float((x.double().mean(0, keepdim=True) - mean).norm()) / scale
    assert err < 0.25 and err < 0.8 * err_pinv, err   # measured 0.09 (mask), 0.075 (sr)


def test_default_is_tweedie_and_the_quirk_is_not():
    gauss, prior, op, _, y = gaussian_latent("sr:factor=2,kernel=bicubic")
    assert get_solver("resample").params["official_tweedie_quirk"] is False
    # one step by hand: z_t = √ᾱ x₀ + √(1−ᾱ) n at t = 501; the exact posterior mean is the Wiener filter of z_t/√ᾱ
    t = 501
    a = float(prior.alphas_cumprod64[t])
    g = torch.Generator().manual_seed(0)
    x0 = gauss.sample(4, g)
    z = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        eps, _ = prior.model_output(z, torch.full((4,), float(t)))
    wiener = gauss.wiener(z / math.sqrt(a), math.sqrt((1 - a) / a)).double()
    pred, tweedie = x0_estimates(z, eps, a, quirk=False)
    _, quirk = x0_estimates(z, eps, a, quirk=True)
    assert torch.equal(pred, tweedie)
    assert float((tweedie.double() - wiener).abs().max()) < 1e-4                          # exact (float32)
    assert float((quirk.double() - wiener).norm() / (wiener - gauss.mean_value).norm()) > 0.5   # measured 1.5
    # and the flag changes the sampler's output (same seeds)
    kw = dict(steps=50, skip=5)
    right = run_sample(get_solver("resample", **kw), many(y, 4), op, prior, range(4), noise=SIGMA)
    wrong = run_sample(get_solver("resample", official_tweedie_quirk=True, **kw), many(y, 4), op, prior, range(4),
                       noise=SIGMA)
    assert float((right - wrong).abs().max()) > 1e-2


# ---------------------------------------------------------------------------------------------------------------------
# smoke tests on a tiny random latent prior


@pytest.mark.parametrize("family", ["sr", "mask-random", "blur", "denoise"])
def test_smoke(family):
    prior = tiny_latent_prior()
    _, op, x_true, y = smoke_problem(family, batch=2, sigma_y=SIGMA)
    make = lambda: get_solver("resample", **SHORT)  # noqa: E731
    a = run_sample(make(), y, op, prior, [0, 1], noise=SIGMA)
    b = run_sample(make(), y, op, prior, [0, 1], noise=SIGMA)
    assert a.shape == x_true.shape and a.dtype == torch.float32 and bool(torch.isfinite(a).all())
    assert torch.equal(a, b)                                                  # same seeds → identical
    alone = run_sample(make(), y[1:], op, prior, [1], noise=SIGMA)
    # batch independence: image 1 alone = image 1 of the batch, up to float32 rounding of batched vs single
    # convolutions (measured ≤ 2.1e-6); a batch-wide norm, MSE, early stop or generator would differ by O(0.1)
    assert torch.allclose(alone, a[1:], rtol=1e-5, atol=3e-4), (alone - a[1:]).abs().max()
    assert not torch.allclose(a[0], a[1])


def test_solve_counts_and_refuses_pixel_priors():
    prior = tiny_latent_prior()
    _, op, _, y = smoke_problem("sr", sigma_y=SIGMA)
    res = solve(get_solver("resample", **SHORT), y, op, prior, seeds=[0], noise=SIGMA)
    # 20 DDIM steps + 2 look-ahead steps at each of the 4 hard-consistency events
    assert res.cost.nfe == 20 + 2 * 4 and res.failed == [None]
    assert res.x.shape == (1, 3, 16, 16) and 0 <= float(res.x.min()) and float(res.x.max()) <= 1
    assert get_solver("resample").auto_preset(operators.build("sr4", (3, 64, 64))) == "default"
    assert get_solver("resample", preset="fast").params["steps"] == 100

    pixel_prior, op, _, y = smoke_problem("sr")
    with pytest.raises(SolverError) as info:
        solve(get_solver("resample"), y, op, pixel_prior, seeds=[0])
    msg = str(info.value)
    assert "resample" in msg and "latent prior" in msg and msg.count(". ") == 0 and msg.endswith(".")


def test_ddim_timesteps_stay_inside_the_schedule_for_any_step_count():
    from restore.solvers.resample import ddim_timesteps

    assert ddim_timesteps(1000, 500)[:3] == [1, 3, 5] and ddim_timesteps(1000, 500)[-1] == 999
    for steps in (3, 7, 30, 333, 499):
        ts = ddim_timesteps(1000, steps)
        assert max(ts) <= 999 and ts == sorted(set(ts))


# ---------------------------------------------------------------------------------------------------------------------
# the inner optimiser


@pytest.mark.parametrize("family", ["sr", "blur", "blur-motion", "mask-random", "denoise", "mri", "ct"])
def test_explicit_pixel_gradient_is_autograd_s(family):
    """The pixel-space fit's loss and gradient without autograd (−(2/n)·Aᵀ(ỹ − A x)) equal autograd's through the
    [-1, 1] residual 2(y − A((x+1)/2)), for every linear family (complex MRI measurements included)."""
    from restore.solvers.resample import _Data

    prior, op, _, y = smoke_problem(family, sigma_y=SIGMA)
    data = _Data(y, op, prior)
    x = torch.randn((1, *op.image_shape), generator=torch.Generator().manual_seed(2))
    loss, grad = data.mse_and_grad(x)
    xr = x.clone().requires_grad_(True)
    ref = data.mse(xr)
    (ref_grad,) = torch.autograd.grad(ref.sum(), xr)
    assert torch.allclose(loss, ref.detach(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-6 * float(ref_grad.abs().max())), \
        (grad - ref_grad).abs().max()


@pytest.mark.parametrize("family", ["sr", "blur-motion", "mask-random"])
def test_explicit_latent_gradient_is_autograd_s(family):
    """Through the decoder: autograd only through D with the explicit image gradient equals autograd through D, A
    and the loss."""
    from restore.solvers.resample import _Data

    prior = tiny_latent_prior()
    _, op, _, y = smoke_problem(family, sigma_y=SIGMA)
    z = torch.randn((2, *prior.latent_shape(op.image_shape[1:])), generator=torch.Generator().manual_seed(4))
    y2 = y.expand(2, *y.shape[1:])
    data = _Data(y2, op, prior)
    loss, grad = data.decoded_mse_and_grad(z)
    zr = z.clone().requires_grad_(True)
    ref = data.mse(prior.decode(zr))
    (ref_grad,) = torch.autograd.grad(ref.sum(), zr)
    assert torch.allclose(loss, ref.detach(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-6 * float(ref_grad.abs().max()))


def test_adamw_minimise_is_torch_adamw_per_image():
    """The batched AdamW with per-image stopping (in place while every image runs, masked once some have stopped)
    against torch.optim.AdamW run on each image alone with the same stopping rule, explicit and autograd gradients."""
    from restore.solvers.resample import adamw_minimise

    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 1, 4, 4, generator=g)
    start = torch.randn(3, 1, 4, 4, generator=g)
    weights = torch.tensor([1.0, 3.0, 0.3]).reshape(3, 1, 1, 1)
    tol = torch.tensor([1e-9, 2.0, 0.1])           # image 0 runs to the cap; 1 and 2 stop early, at different times

    def loss_fn(x):
        return (weights * (x - target) ** 2).reshape(3, -1).mean(1)

    def loss_and_grad(x):
        return loss_fn(x), 2 * weights * (x - target) / 16

    ours_explicit, n1 = adamw_minimise(start, loss_fn, 0.05, 60, 0.01, tol, loss_and_grad=loss_and_grad)
    ours_autograd, n2 = adamw_minimise(start, loss_fn, 0.05, 60, 0.01, tol)
    assert n1 == n2 == 60
    stops = []
    for b in range(3):
        var = start[b:b + 1].clone().requires_grad_(True)
        opt = torch.optim.AdamW([var], lr=0.05, weight_decay=0.01)
        stopped_at = None
        for itr in range(60):
            opt.zero_grad()
            loss = (weights[b] * (var - target[b]) ** 2).mean()
            loss.backward()
            opt.step()
            if loss.item() < float(tol[b]):
                stopped_at = itr
                break
        assert (stopped_at is None) == (b == 0)
        stops.append(stopped_at)
        assert torch.allclose(ours_explicit[b], var.detach()[0], atol=1e-6), b
        assert torch.allclose(ours_autograd[b], var.detach()[0], atol=1e-6), b
    assert stops[1] != stops[2], stops   # the masked update ran while other images were still moving
