"""The classical baselines (restore/solvers/baselines.py, restore/solvers/tv.py): each against its library result or
a closed form, TV on a piecewise-constant phantom, the refusals, and a run of every baseline through ``solve``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import operators
from restore.metrics import psnr
from restore.solve import _NoPrior
from restore.solvers import SOLVERS, SolverError, get_solver, solve
from restore.solvers.baselines import fbp_filter
from restore.solvers.tv import divergence, gradient

BASELINES = ("tv", "bicubic", "wiener", "biharmonic", "nlm", "bm3d", "fbp", "zerofill")
#: an operator of each baseline's family (small images)
TASK = {"bicubic": "sr:factor=4", "wiener": "blur:kind=gaussian,size=7,std=1.5", "biharmonic": "inpaint-random",
        "nlm": "denoise", "bm3d": "denoise", "fbp": "ct:views=30", "zerofill": "mri-4x", "tv": "mri-4x"}


def phantom(size: int = 64) -> torch.Tensor:
    """scikit-image's Shepp–Logan phantom (piecewise constant), area-resized to size², (1, 1, size, size)."""
    from skimage.data import shepp_logan_phantom

    x = torch.from_numpy(shepp_logan_phantom()).float()[None, None]
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area").clamp(0, 1)


def photo(size: int = 32, channels: int = 3) -> torch.Tensor:
    from skimage.data import astronaut
    from skimage.transform import resize

    img = torch.from_numpy(resize(astronaut(), (size, size), anti_aliasing=True)).permute(2, 0, 1)[None].float()
    return img if channels == 3 else img.mean(1, keepdim=True)


def run(name: str, op, y, sigma: float = 0.0, **params):
    """The estimate on [0, 1] (``solve``'s result)."""
    return solve(get_solver(name, **params), y, op, _NoPrior(op.image_shape[0]), seeds=list(range(y.shape[0])),
                 noise=operators.Noise.parse(str(sigma))).x


def measured(spec: str, x: torch.Tensor, sigma: float = 0.0, seeds=None):
    seeds = seeds or list(range(x.shape[0]))
    op = operators.build(spec, tuple(x.shape[1:]), seeds=seeds)
    return op, operators.measure(op, x, noise=sigma, seeds=seeds)


# ------------------------------------------------------------------------------------------------------------------
def test_registered_as_deterministic_baselines():
    for name in BASELINES:
        cls = SOLVERS[name]
        assert getattr(cls, "baseline", False) is True and cls.stochastic is False, name
        assert cls.__doc__ and len(cls.__doc__) > 200, f"{name} needs a docstring with its method and rule"
    assert not getattr(SOLVERS["dps"], "baseline", False)


@pytest.mark.parametrize("name", BASELINES)
def test_runs_through_solve_on_its_family(name):
    if name == "bm3d":
        pytest.importorskip("bm3d")
    spec = TASK[name]
    x = photo(32, 1 if operators.parse(spec).family in ("ct", "mri") else 3)
    op, y = measured(spec, x, 0.05)
    result = solve(get_solver(name), y, op, _NoPrior(x.shape[1]), seeds=[0], noise=operators.Noise.parse("0.05"))
    assert result.x.shape == x.shape and result.failed == [None]
    assert float(result.x.min()) >= 0 and float(result.x.max()) <= 1
    assert psnr(result.x, x) > 15


@pytest.mark.parametrize("name,spec,fits", [
    ("bicubic", "blur:kind=gaussian,size=7,std=1.5", "wiener or tv"),
    ("wiener", "sr:factor=4", "bicubic or tv"),
    ("biharmonic", "denoise", "bm3d, nlm or tv"),
    ("nlm", "mask:kind=box,size=8,margin=2", "biharmonic or tv"),
    ("bm3d", "ct:views=10", "fbp or tv"),
    ("fbp", "mri-4x", "zerofill or tv"),
    ("zerofill", "sr:factor=2", "bicubic or tv"),
    ("tv", "hdr", "dps or daps"),
    ("tv", "phase-retrieval", "dps or daps"),
])
def test_other_families_refused_with_one_sentence(name, spec, fits):
    op = operators.build(spec, (1, 16, 16), seeds=[0])
    with pytest.raises(SolverError) as info:
        get_solver(name).check(op, _NoPrior(1))
    message = str(info.value)
    assert fits in message and message.endswith(".") and message.count(". ") == 0, message
    if name != "tv":
        assert message.startswith(f"{name} is for ")


def test_bm3d_without_its_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bm3d", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(SolverError, match="pip install bm3d"):
        get_solver("bm3d").check(operators.build("denoise", (1, 8, 8)), _NoPrior(1))


# ------------------------------------------------------------------------------------------------------------------
def test_bicubic_is_pillows_resize_and_exact_on_quadratics():
    from PIL import Image

    r = np.arange(16, dtype=np.float64)
    low = (0.2 + 0.02 * r[:, None] + 0.001 * (r[None, :] - 6) ** 2)  # quadratic ramp on the 16×16 grid
    y = torch.from_numpy(np.stack([low, low[::-1].copy()]))[None].float()
    op = operators.build("sr:factor=4", (2, 64, 64), seeds=[0])
    x = run("bicubic", op, y)
    pil = np.asarray(Image.fromarray(low.astype(np.float32)).resize((64, 64), Image.Resampling.BICUBIC))
    assert np.abs(x[0, 0].numpy() - pil).max() < 1e-6  # the same array as Pillow (float mode)
    # away from the border (2 low-res pixels), the Keys a = -1/2 kernel reproduces the quadratic at the upsampled
    # pixel centres t = (i + 1/2)/4 - 1/2 exactly (float32 rounding only)
    t = (np.arange(64) + 0.5) / 4 - 0.5
    exact = 0.2 + 0.02 * t[:, None] + 0.001 * (t[None, :] - 6) ** 2
    inner = slice(10, 54)
    assert np.abs(x[0, 0].numpy()[inner, inner] - exact[inner, inner]).max() < 2e-6


def _circular_wiener(y: np.ndarray, kernel: np.ndarray, alpha: float) -> np.ndarray:
    """The textbook FFT Wiener filter for y = k ⋆ x (correlation, circular): X = μ + K·(Y − μ)/(|K|² + α) with K the
    DFT of the kernel wrapped onto the grid with its centre at the origin (A has ŷ = conj(K)·x̂)."""
    h, w = y.shape[-2:]
    grid = np.zeros((h, w))
    kh, kw = kernel.shape
    for a in range(kh):
        for b in range(kw):
            grid[(a - kh // 2) % h, (b - kw // 2) % w] += kernel[a, b]
    K = np.fft.fft2(grid)
    mu = y.mean(axis=(-2, -1), keepdims=True)
    return mu + np.real(np.fft.ifft2(K * np.fft.fft2(y - mu) / (np.abs(K) ** 2 + alpha)))


@pytest.mark.parametrize("sigma", [0.0, 0.02])
def test_wiener_on_circular_blur_is_the_closed_form(sigma):
    x = photo(32)
    op, y = measured("blur:kind=gaussian,size=9,std=2.0,boundary=circular", x, sigma)
    solver = get_solver("wiener")
    out = solve(solver, y, op, _NoPrior(3), seeds=[0], noise=operators.Noise.parse(str(sigma)))
    yy = y.double().numpy()[0]
    var_x = max(((yy - yy.mean(axis=(-2, -1), keepdims=True)) ** 2).mean() - sigma**2, 1e-4)
    alpha = max(sigma, 0.001) ** 2 / var_x  # the documented rule
    assert out.params["alpha_used"][0] == pytest.approx(alpha, rel=1e-5)
    expected = np.clip(_circular_wiener(yy, op.kernel[0, 0].double().numpy(), alpha), 0, 1)
    assert np.abs(out.x[0].double().numpy() - expected).max() < 1e-5
    assert psnr(out.x, x) > psnr(y.clamp(0, 1), x) + (1.0 if sigma else 4.0)  # measured: +2.1, +10.8 dB


def test_wiener_reflect_solves_the_normal_equations():
    x = photo(32)
    for spec in ("blur:kind=gaussian,size=9,std=2.0", "blur:kind=motion,size=9"):  # SVD / conjugate gradients
        op, y = measured(spec, x, 0.01)
        alpha = 0.003
        est = run("wiener", op, y, 0.01, alpha=alpha)
        mu = y.mean(dim=(-2, -1), keepdim=True)
        ref = (mu + op.least_squares(y - mu, damping=alpha, iterations=500)).clamp(0, 1)
        assert (est - ref).abs().max() < 2e-3, spec


def test_biharmonic_is_scikit_image():
    from skimage.restoration import inpaint_biharmonic

    for channels in (1, 3):
        x = photo(32, channels)
        op, y = measured("mask:kind=random,fraction=0.5", x)
        est = run("biharmonic", op, y)
        img = y[0].double().numpy()
        missing = op.mask[0, 0].numpy() < 0.5
        if channels == 1:
            ref = inpaint_biharmonic(img[0], missing)[None]
        else:
            ref = np.moveaxis(inpaint_biharmonic(np.moveaxis(img, 0, -1), missing, channel_axis=-1), -1, 0)
        assert np.abs(est[0].double().numpy() - np.clip(ref, 0, 1)).max() < 1e-6
        assert psnr(est, x) > psnr(y, x) + 5  # measured (RGB): 8.7 → 25.1 dB


def test_nlm_is_scikit_image_and_denoises():
    from skimage.restoration import denoise_nl_means

    x = photo(48)
    op, y = measured("denoise", x, 0.1)
    est = run("nlm", op, y, 0.1)
    img = np.moveaxis(y[0].double().numpy(), 0, -1)
    ref = denoise_nl_means(img, patch_size=5, patch_distance=6, h=0.08, fast_mode=True, sigma=0.1, channel_axis=-1)
    assert np.abs(est[0].double().numpy() - np.clip(np.moveaxis(ref, -1, 0), 0, 1)).max() < 1e-6
    assert psnr(est, x) > psnr(y.clamp(0, 1), x) + 3  # measured: 20.5 → 24.8 dB


def test_bm3d_is_the_bm3d_package_and_denoises():
    bm3d = pytest.importorskip("bm3d")
    x = phantom(32)
    op, y = measured("denoise", x, 0.1)
    est = run("bm3d", op, y, 0.1)
    ref = np.clip(bm3d.bm3d(y[0, 0].double().numpy(), 0.1), 0, 1)
    assert np.abs(est[0, 0].double().numpy() - ref).max() < 1e-6
    assert psnr(est, x) > psnr(y.clamp(0, 1), x) + 3  # measured: 21.4 → 25.9 dB


def test_fbp_takes_the_rule_s_filter():
    assert fbp_filter(0.0, 128, 60) == "ramp" and fbp_filter(0.025, 128, 60) == "ramp"
    assert fbp_filter(0.5, 128, 60) == "cosine" and fbp_filter(1.0, 128, 60) == "hann"
    assert fbp_filter(0.0, 128, 30) == "cosine" and fbp_filter(0.0, 256, 180) == "ramp"
    x = phantom(32)
    for sigma, chosen in ((0.0, "ramp"), (2.0, "hann")):
        op, y = measured("ct:views=30", x, sigma)  # 32², 30 views: e_views = 0.02
        assert fbp_filter(sigma, 32, 30) == chosen
        solver = get_solver("fbp")
        out = solve(solver, y, op, _NoPrior(1), seeds=[0], noise=operators.Noise.parse(str(sigma)))
        ref = operators.build(f"ct:views=30,filter={chosen}", (1, 32, 32)).A_pinv(y).clamp(0, 1)
        assert out.params["filter_used"] == chosen and torch.allclose(out.x, ref, atol=1e-6)
    with pytest.raises(SolverError, match="has no filter"):
        solve(get_solver("fbp", filter="gauss"), y, op, _NoPrior(1), seeds=[0])


def test_zerofill_is_the_magnitude_of_the_inverse_fft():
    x = photo(32, 1)
    op, y = measured("mri-4x", x, 0.01)
    k = y[0, 0].numpy()
    ref = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho")))
    assert np.abs(run("zerofill", op, y)[0, 0].numpy() - np.clip(ref, 0, 1)).max() < 1e-6
    # complex images: zero filling is A⁺, so zerofill = |A⁺y|
    opc, yc = measured("mri:accel=4,complex=true", x.to(torch.complex64) * 1j ** 0.5, 0.0)
    assert torch.allclose(run("zerofill", opc, yc), opc.A_pinv(yc).abs().clamp(0, 1), atol=1e-6)
    # coils: the root sum of squares, |x| at full sampling
    opm, ym = measured("mri:accel=1,coils=4", x, 0.0)
    assert torch.allclose(run("zerofill", opm, ym), x, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
def test_gradient_and_divergence_are_adjoint():
    g = torch.Generator().manual_seed(0)
    x, p = torch.randn(2, 3, 9, 7, generator=g), torch.randn(2, 3, 2, 9, 7, generator=g)
    assert float((gradient(x) * p).sum()) == pytest.approx(-float((x * divergence(p)).sum()), rel=1e-5)


def test_tv_denoising_is_scikit_image_s_rof():
    """Without an active box constraint (data on [0, 1]: the ROF solution stays within the data's range), TV
    denoising is the ROF model min ½‖x − y‖² + λ TV(x), which ``denoise_tv_chambolle`` solves with weight = λ."""
    from skimage.restoration import denoise_tv_chambolle

    x = phantom(64) * 0.6 + 0.2
    op, y = measured("denoise", x, 0.05)
    y = y.clamp(0, 1)
    ref = denoise_tv_chambolle(y[0, 0].double().numpy(), weight=0.1, eps=1e-10, max_num_iter=20000)
    ours = run("tv", op, y, weight=0.1, iterations=1000, tol=1e-6)[0, 0].double().numpy()
    assert np.abs(ours - ref).max() < 3e-3 and np.abs(ours - ref).mean() < 5e-4  # measured: 1.0e-3, 1.5e-4
    default = run("tv", op, y, weight=0.1)[0, 0].double().numpy()  # 300 iterations, tol 1e-4
    assert np.abs(default - ref).mean() < 5e-3  # measured: 2.6e-3


def test_tv_denoises_the_phantom():
    x = phantom(64)
    op, y = measured("denoise", x, 0.1)
    est = run("tv", op, y, 0.1)
    noisy, restored = psnr(y.clamp(0, 1), x), psnr(est, x)
    assert restored > noisy + 3, (noisy, restored)  # measured: 21.7 → 25.4 dB


def test_tv_inpaints_the_phantom():
    x = phantom(64)
    op, y = measured("mask:kind=random,fraction=0.7", x, 0.0)
    est = run("tv", op, y)
    zero_filled, restored = psnr(op.A_pinv(y).clamp(0, 1), x), psnr(est, x)
    assert restored > zero_filled + 4, (zero_filled, restored)  # measured: 14.8 → 20.2 dB (biharmonic 21.1)


def test_tv_on_mri_k_space():
    x = phantom(64)
    op, y = measured("mri-4x", x, 0.01)
    est = run("tv", op, y, 0.01)
    zero_filled = run("zerofill", op, y)
    assert psnr(est, x) > psnr(zero_filled, x) + 5  # measured: 17.9 → 27.0 dB
    # complex images: kept complex inside, magnitude returned
    opc, yc = measured("mri:accel=4,complex=true", x.to(torch.complex64), 0.01)
    estc = run("tv", opc, yc, 0.01)
    assert psnr(estc, x) > psnr(run("zerofill", opc, yc), x) + 3  # measured: 17.9 → 22.6 dB


def test_tv_is_batch_independent():
    x = torch.cat([phantom(32), photo(32, 1)])
    op, y = measured("sr:factor=2", x, 0.02, seeds=[3, 4])
    both = run("tv", op, y, 0.02)
    alone = run("tv", op.select(1), y[1:], 0.02)
    assert torch.allclose(both[1:], alone, atol=1e-5)
