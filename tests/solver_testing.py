"""Shared helpers for solver tests (not a test module itself).

* ``tiny_unet_prior``: a DiffusionPrior around a tiny ADM UNet with random weights (the zero-initialised output layers
  re-drawn, so that ε̂ and the variance channels are not identically zero) — for smoke tests of the real code paths;
* ``cpu64_prior``: the same with ``priors.train.ARCHITECTURES['cpu64']`` at 64×64 (timing measurements);
* ``gaussian_problem``: a Gaussian prior (exact posterior known), a linear operator, a prior sample and its
  measurement — for correctness tests against ``GaussianPrior.posterior``;
* ``SMOKE_SPECS``: one small operator spec per family with the image shape it is built for;
* ``run_sample``: a solver's ``sample`` called the way ``solve`` calls it, but returning the raw [-1, 1] output;
* ``one_thread`` (in conftest.py): ``pytestmark = pytest.mark.usefixtures("one_thread")`` runs tests
  on one intra-op thread.
"""

from __future__ import annotations

from typing import Sequence

import pytest
import torch

import operators
from operators.seeding import generators
from priors.adm import ADMConfig, ADMUNet
from priors.base import DiffusionPrior, PriorCard, ldm_linear_betas
from priors.gaussian import GaussianPrior
from priors.latent import AutoencoderConfig, LatentPrior, SmallAutoencoder

#: family → (spec, image shape (C, H, W)): tiny instances of every operator family for smoke tests
SMOKE_SPECS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "sr": ("sr:factor=2,kernel=bicubic", (3, 16, 16)),
    "blur": ("blur:kind=gaussian,size=5,std=1.0", (3, 16, 16)),
    "blur-motion": ("blur:kind=motion,size=5,intensity=0.5", (3, 16, 16)),
    "mask-box": ("mask:kind=box,size=6,margin=2", (3, 16, 16)),
    "mask-random": ("mask:kind=random,fraction=0.5", (3, 16, 16)),
    "denoise": ("denoise", (3, 16, 16)),
    "mri": ("mri:accel=4,center=0.08,pattern=random", (1, 16, 16)),
    "ct": ("ct:views=8", (1, 16, 16)),
    "phase": ("phase:oversample=2.0", (3, 16, 16)),
    "hdr": ("hdr:scale=2.0", (3, 16, 16)),
}

#: linear operators with an exact SVD, for the Gaussian-prior correctness tests on 1×8×8 images
GAUSSIAN_SPECS: dict[str, str] = {
    "sr": "sr:factor=2,kernel=bicubic",
    "mask": "mask:kind=random,fraction=0.5",
    "blur": "blur:kind=gaussian,size=5,std=1.0,boundary=circular",
    "denoise": "denoise",
}




def _randomise_zeroed(net: torch.nn.Module, gen: torch.Generator, gain: float = 0.5) -> None:
    """Re-draw the weights that guided-diffusion initialises to zero (residual outputs, the final conv), so a random
    network gives non-trivial ε̂ and variance outputs of order one."""
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not bool(p.any()):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (gain / fan_in**0.5))


def adm_prior(config: ADMConfig, seed: int = 0, name: str = "tiny-random") -> DiffusionPrior:
    """A DiffusionPrior around an ADMUNet with seeded random weights (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ADMUNet(config)
    _randomise_zeroed(net, torch.Generator().manual_seed(seed + 1))
    card = PriorCard(name=name, image_size=config.image_size, channels=config.in_channels,
                     domain="random weights (tests)", learned_variance=config.learn_sigma,
                     architecture={"kind": "adm", **config.to_dict()})
    return DiffusionPrior(net.eval(), card).eval()


def tiny_unet_prior(channels: int = 3, size: int = 16, seed: int = 0, learn_sigma: bool = False) -> DiffusionPrior:
    """A tiny random ADM UNet prior (32 channels, levels 1,2, attention at 8×8): fast enough for many calls."""
    cfg = ADMConfig(image_size=size, in_channels=channels, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                    attention_resolutions="8", num_head_channels=32, learn_sigma=learn_sigma,
                    use_scale_shift_norm=True)
    return adm_prior(cfg, seed)


def cpu64_prior(channels: int = 3, size: int = 64, seed: int = 0, learn_sigma: bool = False) -> DiffusionPrior:
    """A random prior with the ``cpu64`` architecture of ``priors.train`` (1.6 M parameters) at 64×64."""
    from priors.train import ARCHITECTURES

    cfg = ADMConfig.from_dict(dict(ARCHITECTURES["cpu64"], image_size=size, in_channels=channels,
                                   learn_sigma=learn_sigma))
    return adm_prior(cfg, seed, name="cpu64-random")


def gaussian_problem(spec: str, shape: Sequence[int] = (1, 8, 8), sigma_y: float = 0.0, seed: int = 0,
                     batch: int = 1, **prior_kwargs):
    """(prior, op, x_true, y): a GaussianPrior for ``shape``, the operator ``spec`` (one shared parameter set), x_true
    drawn from the prior (on [-1, 1], ``batch`` images, seeds seed, seed+1, …) and y = A((x_true+1)/2) + σ_y·n."""
    prior = GaussianPrior(shape, **prior_kwargs)
    op = operators.build(spec, tuple(shape), seeds=[seed])
    seeds = [seed + i for i in range(batch)]
    x_true = prior.sample(batch, generators(seeds, "gaussian-prior-sample"))
    y = operators.measure(op, (x_true + 1) / 2, noise=sigma_y, seeds=seeds)
    return prior, op, x_true, y


def smoke_problem(family: str, seed: int = 0, batch: int = 1, learn_sigma: bool = False, sigma_y: float = 0.0):
    """(prior, op, x_true, y) for the smoke spec of ``family`` with a tiny random UNet prior of matching channels;
    x_true is a smooth test image on [-1, 1]."""
    spec, shape = SMOKE_SPECS[family]
    prior = tiny_unet_prior(channels=shape[0], size=shape[1], seed=seed, learn_sigma=learn_sigma)
    op = operators.build(spec, shape, seeds=[seed])
    c, h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([(0.5 + 0.4 * torch.sin(3 * xx + 2 * k) * torch.cos(2 * yy)) for k in range(c)])
    x01 = torch.stack([base.roll(i, dims=-1) for i in range(batch)])
    y = operators.measure(op, x01, noise=sigma_y, seeds=[seed + i for i in range(batch)])
    return prior, op, x01 * 2 - 1, y


def run_sample(solver, y: torch.Tensor, op, prior, seeds: Sequence[int], noise: float = 0.0) -> torch.Tensor:
    """``solver.sample`` with the generators, noise level and grad mode that ``solve`` would give it; returns the raw
    estimate on [-1, 1] (not clamped), detached."""
    from restore.solvers.base import solver_needs_grad

    solver.check(op, prior)
    solver.noise = float(noise)
    solver.reported = {}
    gens = generators(list(seeds), f"solver/{solver.name}/0")
    with torch.no_grad() if not solver_needs_grad(solver) else torch.enable_grad():
        return solver.sample(y, op, prior, gens, None).detach()


def tiny_latent_prior(channels: int = 3, size: int = 16, seed: int = 0, timesteps: int = 1000) -> LatentPrior:
    """A random LatentPrior: a tiny SmallAutoencoder (×2 down, 3 latent channels) + a tiny ADM UNet on its latents,
    on the ldm-linear schedule with ``timesteps`` steps."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ae = SmallAutoencoder(AutoencoderConfig(in_channels=channels, latent_channels=3, base_channels=8,
                                                channel_mult="1,2", num_res_blocks=1)).eval()
        cfg = ADMConfig(image_size=size // 2, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                        attention_resolutions="4", num_head_channels=32, learn_sigma=False,
                        use_scale_shift_norm=True)
        net = ADMUNet(cfg)
    _randomise_zeroed(net, torch.Generator().manual_seed(seed + 1))
    card = PriorCard(name="tiny-latent-random", image_size=size, channels=channels, domain="random weights (tests)",
                     schedule="ldm-linear", timesteps=timesteps)
    return LatentPrior(net.eval(), card, ae, betas=ldm_linear_betas(timesteps) if timesteps != 1000 else None).eval()


def posterior_stats(x: torch.Tensor, prior, op, y, sigma_y):
    """K samples ``x`` against the exact Gaussian posterior: (distance of their mean to the posterior mean, its
    Monte-Carlo scale, spread ratio, residual of the mean, residual of the prior mean); distances relative to
    ‖m_post − μ_prior‖, what the measurement adds."""
    mean, cov = prior.posterior(y, op, sigma_y)
    m = x.double().mean(0, keepdim=True)
    scale = (mean - prior.mean_value).norm()
    mc = float((cov[0].diagonal().clamp_min(0).sum() / x.shape[0]).sqrt() / scale)
    spread = float((x.double().var(0).sum() / cov[0].diagonal().clamp_min(1e-300).sum()).sqrt())
    res = float((op.A((m.float() + 1) / 2) - y).norm())
    res_prior = float((op.A(torch.full_like(m, (prior.mean_value + 1) / 2).float()) - y).norm())
    return float((m - mean).norm() / scale), mc, spread, res, res_prior


class IdentityAE(torch.nn.Module):
    """encode = decode = identity: a latent prior whose latents are the images."""

    latent_channels = 1
    downsample = 1

    def encode(self, x):
        return x

    def decode(self, z):
        return z



def random_image_folder(folder, n: int = 12, size: int = 20, seed: int = 0):
    """A folder of n random RGB PNGs of size × size (training-data fixtures); returns the folder."""
    from restore.io import save_image

    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        save_image(folder / f"{i:02d}.png", torch.rand(3, size, size, generator=g))
    return folder
