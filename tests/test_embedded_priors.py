"""The priors shipped inside the package: intact, loadable by name, and real (they beat classical baselines on a
shipped sample image that none of them was trained on)."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import operators
import priors
from priors.base import sha256_file
from priors.registry import embedded_cards
from restore.io import load_image
from restore.metrics import psnr
from restore.solvers import get_solver, solve

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
EMBEDDED = embedded_cards()
NAMES = sorted(EMBEDDED)
FACE_PRIORS = [n for n in NAMES if EMBEDDED[n][0].domain.startswith("faces") and not EMBEDDED[n][0].latent]

if not NAMES:
    pytest.skip("no embedded priors in this checkout", allow_module_level=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", NAMES)
def test_card_and_weights_agree(name):
    card, weights = EMBEDDED[name]
    assert weights.is_file() and sha256_file(weights) == card.sha256
    assert card.licence and card.training_data and card.extra.get("steps", 0) > 0
    assert weights.stat().st_size < 20 * 2**20, "embedded weights stay small"
    prior = priors.resolve(name)
    size = card.image_size
    x = torch.rand(1, card.channels, size, size) * 2 - 1
    assert prior.denoise(x, 0.5).shape == x.shape


def _best_gaussian_smoothing(noisy, clean):
    best = -math.inf
    for s in (0.5, 0.7, 0.9, 1.2, 1.5, 2.0):
        r = int(math.ceil(3 * s))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1.0) / s) ** 2)
        k = (k / k.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
        out = F.conv2d(F.pad(noisy, (r, r, 0, 0), mode="reflect"), k, groups=3)
        out = F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2), groups=3)
        best = max(best, psnr(out[0], clean[0]))
    return best


@pytest.mark.parametrize("name", FACE_PRIORS)
@pytest.mark.parametrize("sigma", [0.1, 0.2])
def test_face_prior_denoises_better_than_gaussian_smoothing(name, sigma):
    clean = load_image(SAMPLES / "astronaut_face64.png")[None]
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    prior = priors.resolve(name)
    with torch.no_grad():
        denoised = (prior.denoise(noisy * 2 - 1, 2 * sigma) + 1) / 2
    assert psnr(denoised[0], clean[0]) > _best_gaussian_smoothing(noisy, clean) + 0.5


@pytest.mark.parametrize("name", FACE_PRIORS)
def test_ddnm_with_the_face_prior_fills_random_holes_far_better_than_pinv(name):
    clean = load_image(SAMPLES / "astronaut_face64.png")[None]
    op = operators.build("mask:kind=random,fraction=0.7", (3, 64, 64), seeds=[0])
    y = operators.measure(op, clean, 0.0, [0])
    prior = priors.resolve(name)
    restored = solve(get_solver("ddnm", steps=25), y, op, prior, seeds=[0]).x
    baseline = solve(get_solver("pinv"), y, op, prior, seeds=[0]).x
    assert psnr(restored[0], clean[0]) > psnr(baseline[0], clean[0]) + 10
    assert psnr(restored[0], clean[0]) > 22
