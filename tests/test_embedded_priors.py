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
    shape = prior.latent_shape() if card.latent else (card.channels, size, size)
    x = torch.rand(1, *shape) * 2 - 1
    assert prior.denoise(x, 0.5).shape == x.shape
    if card.extra.get("any_size"):  # convolutional priors run on other sizes that 8 divides, e.g. 40×24
        assert prior.denoise(torch.zeros(1, card.channels, 40, 24), 0.5).shape == (1, card.channels, 40, 24)


def _best_gaussian_smoothing(noisy, clean):
    """The best PSNR over Gaussian blur widths (an oracle choice: a generous classical baseline); mean over images."""
    best = -math.inf
    c = noisy.shape[1]
    for s in (0.5, 0.7, 0.9, 1.2, 1.5, 2.0):
        r = int(math.ceil(3 * s))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1.0) / s) ** 2)
        k = (k / k.sum()).view(1, 1, 1, -1).expand(c, 1, 1, -1)
        out = F.conv2d(F.pad(noisy, (r, r, 0, 0), mode="reflect"), k, groups=c)
        out = F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2), groups=c)
        best = max(best, sum(psnr(o, x) for o, x in zip(out, clean)) / len(clean))
    return best


def _prior_psnr(prior, clean, sigma):
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = (prior.denoise(noisy * 2 - 1, 2 * sigma) + 1) / 2
    return sum(psnr(d, x) for d, x in zip(denoised, clean)) / len(clean), _best_gaussian_smoothing(noisy, clean)


def _shared_images(shared, folder, n, channels=1, size=None, hu=None):
    from restore.io import find_images

    files = [p for p, _ in find_images([str(shared / "test" / folder)])]
    files = [files[i * len(files) // n] for i in range(n)]
    xs = []
    for f in files:
        x = load_image(f, hu_window=hu) if hu else load_image(f)
        x = x.mean(0, keepdim=True) if channels == 1 else x
        if size and x.shape[-1] != size:
            x = F.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True)[0].clamp(0, 1)
        xs.append(x)
    return torch.stack(xs)


@pytest.mark.skipif("brain-mri" not in EMBEDDED, reason="no brain-mri prior in this checkout")
@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_brain_mri_prior_denoises_held_out_slices_better_than_gaussian_smoothing(shared, sigma):
    clean = _shared_images(shared, "brain_mri128", 4)
    ours, gauss = _prior_psnr(priors.resolve("brain-mri"), clean, sigma)
    assert ours > gauss + 0.5


@pytest.mark.skipif("ct" not in EMBEDDED, reason="no ct prior in this checkout")
@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_ct_prior_denoises_held_out_patients_better_than_gaussian_smoothing(shared, sigma):
    prior = priors.resolve("ct")
    lo, hi = prior.card.extra["value_map"][3:].split(",")
    clean = _shared_images(shared, "ct_dicom", 3, size=prior.card.image_size, hu=(float(lo), float(hi)))
    ours, gauss = _prior_psnr(prior, clean, sigma)
    assert ours > gauss + 0.5


@pytest.mark.skipif("natural" not in EMBEDDED, reason="no natural prior in this checkout")
@pytest.mark.parametrize("sigma", [0.1, 0.2])
def test_natural_prior_denoises_whole_shipped_photographs_better_than_gaussian_smoothing(sigma):
    """coffee (192×288) and the astronaut (256×256): whole images of sizes it never saw (it trained on 64² crops of
    other photographs)."""
    prior = priors.resolve("natural")
    for name in ("coffee.png", "astronaut.png"):
        ours, gauss = _prior_psnr(prior, load_image(SAMPLES / name)[None], sigma)
        assert ours > gauss + 0.5, name


@pytest.mark.skipif("faces64-latent" not in EMBEDDED, reason="no faces64-latent prior in this checkout")
def test_latent_face_prior_autoencoder_reconstructs_an_unseen_face():
    prior = priors.resolve("faces64-latent")
    clean = load_image(SAMPLES / "astronaut_face64.png")[None]
    with torch.no_grad():
        rec = ((prior.decode(prior.encode(clean * 2 - 1)) + 1) / 2).clamp(0, 1)
    assert psnr(rec[0], clean[0]) > 24


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


def test_every_demo_task_has_its_sample_and_an_embedded_prior():
    """`make demo` on a fresh clone: each task's image ships in sample_data and its prior in priors/embedded."""
    from restore.demo import SAMPLES as DEMO_SAMPLES, TASKS

    for image, spec, _, prior, solvers in TASKS:
        assert (DEMO_SAMPLES / image).is_file(), image
        operators.parse(spec)
        if solvers:
            assert prior in EMBEDDED, prior


def test_demo_runs_the_classical_baselines_beside_the_solvers():
    """Each demo task runs A⁺y, then the classical method named for its operator (and TV), then its solvers; without
    its prior only the first two groups."""
    from restore.demo import TASKS, demo_plan

    named = {"sr": "bicubic", "mask": "biharmonic", "blur": "wiener", "mri": "zerofill", "ct": "fbp"}
    for image, spec, _, prior, solvers in TASKS:
        shape = (1, 128, 128) if image.startswith(("brain", "ct")) else (3, 64, 64)  # the samples' sizes
        plan = demo_plan(spec, shape, solvers, True)
        names = [s for s, _ in plan]
        assert names[0] == "pinv" and names.count("pinv") == 1
        assert named[spec.split(":")[0]] in names and "tv" in names, (spec, names)
        assert plan[-len(solvers):] == list(solvers)
        assert [s for s, _ in demo_plan(spec, shape, solvers, False)] == names[:len(names) - len(solvers)]


def test_demo_table_marks_each_tasks_best():
    from restore.demo import _cell

    best = {"psnr": 25.0, "ssim": None, "lpips": 0.05}
    assert _cell({"psnr": 25.0}, "psnr", ".2f", best) == "[bold]25.00[/]"
    assert _cell({"psnr": 24.0}, "psnr", ".2f", best) == "24.00"
    assert _cell({"lpips": 0.05}, "lpips", ".3f", best) == "[bold]0.050[/]"
    assert _cell({}, "ssim", ".3f", best) == "-"
