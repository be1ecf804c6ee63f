"""Oracle tests for the blur family against independent references (scipy.ndimage, torch conv2d, dense matrices).
The generic properties (adjoint, SVD, seeding, ...) are in test_generic.py with tests/cases_blur.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from PIL import Image

from operators import OperatorError, build, parse
from operators.blur import fft_length, motion_kernel


def correlate(op, x: torch.Tensor, mode: str) -> np.ndarray:
    """scipy.ndimage.correlate of every channel with the operator's kernel (of each image)."""
    k = op.kernel.double().numpy()[:, 0]
    return np.stack([np.stack([ndi.correlate(ch, k[i % len(k)], mode=mode) for ch in img])
                     for i, img in enumerate(x.double().numpy())])


def dense(op) -> np.ndarray:
    """The operator's matrix (one image), column by column."""
    n = int(np.prod(op.image_shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *op.image_shape)
    return op.A(basis).reshape(n, -1).T.numpy()


def kernel_file(tmp_path, array) -> str:
    path = tmp_path / "k.npy"
    np.save(path, array)
    return str(path)


NON_SEPARABLE = np.random.default_rng(1).random((4, 7)) * np.tri(4, 7, 3)  # even, non-square, asymmetric


@pytest.mark.parametrize("size,std", [(61, 3.0), (9, 3.0), (15, 1.0)])
def test_gaussian_kernel_is_dps_gaussian_filter_of_a_delta(size, std):
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    reference = ndi.gaussian_filter(delta, sigma=std)  # DPS Blurkernel (truncated at 4σ, reflect-folded if smaller)
    k = build(f"blur:kind=gaussian,size={size},std={std}", (1, 8, 8)).kernel
    assert k.shape == (1, 1, size, size) and k.dtype == torch.float32
    np.testing.assert_allclose(k[0, 0].double().numpy(), reference, rtol=1e-6, atol=1e-10)
    assert abs(float(k.double().sum()) - 1) < 1e-6


@pytest.mark.parametrize("spec,shape", [
    ("blur:kind=gaussian,size=9,std=1.5", (3, 20, 24)),
    ("blur:kind=uniform,size=5", (1, 16, 12)),
    ("blur:kind=motion,size=9", (2, 16, 16)),
    ("deblur-motion", (1, 64, 64)),
    ("blur:kind=gaussian,size=9,std=3.0", (1, 5, 7)),  # pads longer than the image: reflected again
    ("blur:kind=motion,size=9", (1, 5, 7)),
    ("blur:kind=motion,size=9", (1, 3, 4)),  # pads longer than the image, non-separable: the gather path
])
@pytest.mark.parametrize("boundary,mode", [("reflect", "mirror"), ("circular", "wrap")])
def test_blur_equals_scipy_correlate(spec, shape, boundary, mode):
    # scipy 'mirror' = reflection without repeating the edge (torch ReflectionPad2d); 'wrap' = periodic
    op = build(f"{spec},boundary={boundary}" if ":" in spec else f"{spec}:boundary={boundary}", shape, seeds=[0, 1])
    x = torch.rand(2, *shape, dtype=torch.float64)
    np.testing.assert_allclose(op.A(x).numpy(), correlate(op, x, mode), atol=1e-6)


@pytest.mark.parametrize("boundary,mode", [("reflect", "mirror"), ("circular", "wrap")])
def test_file_kernel_even_and_non_square(tmp_path, boundary, mode):
    op = build(f"blur:kind=file,file={kernel_file(tmp_path, NON_SEPARABLE)},boundary={boundary}", (1, 12, 10))
    np.testing.assert_allclose(op.kernel[0, 0].double().numpy(), NON_SEPARABLE / NON_SEPARABLE.sum(), rtol=1e-6)
    x = torch.rand(2, 1, 12, 10, dtype=torch.float64)
    np.testing.assert_allclose(op.A(x).numpy(), correlate(op, x, mode), atol=1e-6)


def test_fft_length_is_the_smallest_even_5_smooth_length():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 700):
        expected = next(m for m in range(n, 2 * n + 2) if m % 2 == 0 and smooth(m))
        assert fft_length(n) == expected, n
    assert (fft_length(124), fft_length(316)) == (128, 320)   # a 61×61 kernel on 64² and 256² images


def test_adjoint_when_the_pad_is_longer_than_the_image():
    op = build("blur:kind=motion,size=9", (2, 3, 4), seeds=[0])
    a = dense(op)
    y = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    np.testing.assert_allclose(op.A_adjoint(y).numpy().ravel(), a.T @ y.numpy().ravel(), atol=1e-6)


def test_gaussian_equals_dps_reflection_pad_and_depthwise_conv():
    op = build("deblur-gauss", (3, 64, 64))
    x = torch.rand(2, 3, 64, 64)
    weight = op.kernel.expand(3, 1, 61, 61)
    reference = F.conv2d(F.pad(x, (30, 30, 30, 30), mode="reflect"), weight, groups=3)
    torch.testing.assert_close(op.A(x), reference, atol=1e-5, rtol=1e-5)


def test_png_kernel_file(tmp_path):
    pixels = (np.random.default_rng(0).random((5, 5)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "k.png")
    op = build(f"blur:kind=file,file={tmp_path / 'k.png'}", (1, 8, 8))
    np.testing.assert_allclose(op.kernel[0, 0].numpy(), pixels / pixels.sum(), rtol=1e-5)


@pytest.mark.parametrize("array,match", [
    (np.ones((3, 5, 5)), "2-D"),
    (np.zeros((5, 5)), "positive sum"),
    (np.full((3, 3), np.nan), "finite"),
])
def test_bad_kernel_file_is_refused(tmp_path, array, match):
    with pytest.raises(OperatorError, match=match):
        build(f"blur:kind=file,file={kernel_file(tmp_path, array)}", (1, 8, 8))


def test_missing_kernel_file_is_refused(tmp_path):
    with pytest.raises(OperatorError, match="does not exist"):
        build(f"blur:kind=file,file={tmp_path / 'nope.npy'}", (1, 8, 8))
    with pytest.raises(OperatorError, match="needs a file"):
        build("blur:kind=file", (1, 8, 8))


@pytest.mark.parametrize("text", ["blur:size=8", "blur:std=0", "blur:intensity=1.5", "blur:kind=box",
                                  "blur:boundary=zero"])
def test_bad_parameters_are_refused(text):
    with pytest.raises(OperatorError):
        parse(text)


def test_motion_kernels_are_seeded_normalised_and_per_image():
    op = build("deblur-motion", (1, 16, 16), seeds=[3, 4])
    k = op.kernel
    assert k.shape == (2, 1, 61, 61)
    assert float(k.min()) >= 0
    torch.testing.assert_close(k.double().sum(dim=(1, 2, 3)), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.equal(build("deblur-motion", (1, 16, 16), seeds=[4]).kernel[0], k[1])
    assert not torch.allclose(k[0], k[1])


def test_motion_kernel_spread_matches_the_original():
    # LeviBorodenko/motionblur Kernel((61, 61), 0.5), 400 draws: RMS radius of the kernel about its centroid
    # 10.7 px on average (standard deviation 4.9); 40 of ours must average within ~3 standard errors of it
    kernels = build("deblur-motion", (1, 8, 8), seeds=list(range(40))).kernel[:, 0].double().numpy()
    yy, xx = np.mgrid[:61, :61]
    radii = []
    for k in kernels:
        cy, cx = (k * yy).sum(), (k * xx).sum()
        radii.append(np.sqrt((k * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum()))
    assert 8.2 < np.mean(radii) < 13.2
    assert 2.5 < np.std(radii) < 7.5


def test_motion_kernel_accepts_legacy_random_state():
    # the same draws from the same stream give the same kernel, whatever numpy generator API supplies them
    a = motion_kernel(61, 0.5, np.random.RandomState(7))
    b = motion_kernel(61, 0.5, np.random.RandomState(7))
    assert np.array_equal(a, b) and a.shape == (61, 61)


@pytest.mark.parametrize("spec", ["blur:kind=gaussian,size=5,std=1.0", "blur:kind=uniform,size=3",
                                  "blur:kind=motion,size=5,boundary=circular",
                                  "blur:kind=gaussian,size=5,std=2.0,boundary=circular"])
def test_svd_and_pinv_match_the_dense_operator(spec):
    op = build(spec, (1, 8, 7))
    a = dense(op)
    s_dense = np.linalg.svd(a, compute_uv=False)
    s_op = np.sort(op.singulars().double().numpy().ravel())[::-1]
    np.testing.assert_allclose(s_op, s_dense, atol=1e-6)
    # A⁺ = truncated SVD pseudo-inverse with singular values ≤ rcond · s_max dropped
    pinv = np.linalg.pinv(a, rcond=op.rcond)
    y = torch.randn(2, 1, 8, 7)
    np.testing.assert_allclose(op.A_pinv(y).reshape(2, -1).double().numpy(), y.reshape(2, -1).double().numpy() @ pinv.T,
                               rtol=1e-4, atol=1e-4)


def test_reflect_non_separable_pinv_is_damped_least_squares():
    op = build("blur:kind=motion,size=5", (1, 6, 6))
    assert not op.has_svd
    a = dense(op)
    y = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    reference = np.linalg.solve(a.T @ a + op.damping * np.eye(36), a.T @ y.numpy().ravel())
    np.testing.assert_allclose(op.A_pinv(y).numpy().ravel(), reference, rtol=1e-3, atol=1e-3 * np.abs(reference).max())


def test_cached_spectra_follow_a_replaced_kernel():
    op = build("blur:kind=motion,size=9", (1, 16, 16), seeds=[0])
    other = build("blur:kind=motion,size=9", (1, 16, 16), seeds=[1])
    x = torch.rand(1, 1, 16, 16)
    op.A(x)  # fills the cache
    op.load_state_dict(other.state_dict())  # in-place copy into the kernel buffer
    torch.testing.assert_close(op.A(x), other.A(x))


def test_presets():
    assert str(parse("deblur-gauss")) == "blur:kind=gaussian,size=61,std=3.0,intensity=0.5,file=,boundary=reflect"
    assert parse("deblur-motion") == parse("blur:kind=motion,size=61,intensity=0.5")
    assert parse("deblur-uniform") == parse("blur:kind=uniform,size=9")
    assert parse("deblur-gauss-circ")["boundary"] == "circular"
