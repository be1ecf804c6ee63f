"""CT operator against scikit-image (the oracle): radon, iradon for every filter, limited angle, the dense matrix,
plus shape errors, chunking and differentiability. The generic tests (test_generic.py) cover the rest."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from operators import OperatorError, build, parse
from operators import ct

skimage_transform = pytest.importorskip("skimage.transform")
from skimage.data import shepp_logan_phantom  # noqa: E402

RADON_TOL = 1e-5  # relative L2, float32 vs skimage's float64 (measured ≤ 3e-7 at 64–128 px)
FBP_TOL = 1e-5  # relative L2 (measured ≤ 2.3e-6 at 128 px, ≤ 1.2e-6 at 64–65 px)


def phantom(n: int) -> np.ndarray:
    return skimage_transform.resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def sk_radon(img, theta, circle):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "image must be zero outside the reconstruction circle"
        return skimage_transform.radon(img, theta, circle=circle)


def ours(spec: str, img: np.ndarray):
    op = build(spec, (1, *img.shape))
    return op, op.A(torch.from_numpy(img).float()[None, None])[0, 0].numpy()


@pytest.mark.parametrize("n", [64, 65])
@pytest.mark.parametrize("circle", [True, False])
def test_radon_matches_skimage(n, circle):
    img = phantom(n)
    op, y = ours(f"ct:views=180,circle={str(circle).lower()}", img)
    ref = sk_radon(img, np.linspace(0, 180, 180, endpoint=False), circle)
    assert y.shape == (180, n if circle else math.ceil(math.sqrt(2) * n)) == ref.T.shape
    assert op.measurement_shape() == (1, *y.shape)
    assert rel(y.T, ref) < RADON_TOL


@pytest.mark.parametrize("circle", [True, False])
@pytest.mark.parametrize("filter_name", ct.FILTERS)
def test_fbp_matches_skimage_iradon(filter_name, circle):
    n, views = 64, 90
    theta = np.linspace(0, 180, views, endpoint=False)
    sino = sk_radon(phantom(n), theta, circle)
    op = build(f"ct:views={views},filter={filter_name},circle={str(circle).lower()}", (1, n, n))
    x = op.A_pinv(torch.from_numpy(sino.T.copy()).float()[None, None])[0, 0].numpy()
    ref = skimage_transform.iradon(sino, theta, filter_name=filter_name, circle=circle)
    assert x.shape == ref.shape == (n, n)
    assert rel(x, ref) < FBP_TOL


@pytest.mark.parametrize("circle", [True, False])
def test_limited_angle_matches_skimage(circle):
    img = phantom(64)
    theta = np.linspace(0, 120, 40, endpoint=False)
    op, y = ours(f"ct-limited120:views=40,circle={str(circle).lower()}", img)
    ref = sk_radon(img, theta, circle)
    assert rel(y.T, ref) < RADON_TOL
    x = op.fbp(torch.from_numpy(ref.T.copy()).float()[None, None])[0, 0].numpy()
    assert rel(x, skimage_transform.iradon(ref, theta, circle=circle)) < FBP_TOL


@pytest.mark.parametrize("circle", [True, False])
def test_dense_matrix_is_skimage_and_adjoint_is_its_transpose(circle):
    """A column by column on a tiny image equals skimage's radon of each basis image, and Aᵀ equals Aᵀ of that
    matrix exactly (the adjoint is the sampler's VJP, so this checks it independently of autograd)."""
    n, views = 8, 6
    op = build(f"ct:views={views},circle={str(circle).lower()}", (1, n, n))
    m = op.n_det
    basis = torch.eye(n * n).reshape(n * n, 1, n, n)
    matrix = op.A(basis).reshape(n * n, views * m).T.double()  # (measurements, pixels)
    theta = np.linspace(0, 180, views, endpoint=False)
    sk = np.stack([sk_radon(e.numpy()[0], theta, circle).T.reshape(-1) for e in basis], axis=1)
    assert np.abs(matrix.numpy() - sk).max() < 1e-5
    adjoint = op.A_adjoint(torch.eye(views * m).reshape(views * m, 1, views, m)).reshape(views * m, n * n).double()
    assert torch.allclose(adjoint, matrix, atol=1e-6)


def test_non_square_image_is_refused():
    with pytest.raises(OperatorError, match="square"):
        build("ct", (1, 32, 48))


def test_presets():
    assert parse("ct-sparse60")["views"] == 60 and parse("ct-sparse30")["views"] == 30
    assert parse("ct-full")["views"] == 180
    limited = parse("ct-limited120")
    assert (limited["views"], limited["range"]) == (120, 120.0)
    assert parse("ct")["circle"] is True and parse("ct")["filter"] == "ramp"
    with pytest.raises(OperatorError):
        parse("ct:filter=butterworth")
    with pytest.raises(OperatorError):
        parse("ct:range=0")


def test_chunking_and_channels_do_not_change_the_result(monkeypatch):
    """Many small chunks with 3 sampler groups (7 views: a remainder chunk of 1 group) give the one-chunk result;
    channels and images are independent."""
    op = build("ct:views=7,circle=false", (2, 16, 16))
    x = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    y, xt, xf = op.A(x), op.A_adjoint(op.A(x)), op.fbp(op.A(x))
    monkeypatch.setattr(ct, "CPU_CHUNK", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert len(op._plan(4, op.n_det**2, x)) == 3
    assert torch.allclose(op.A(x), y, atol=1e-5)
    assert torch.allclose(op.A_adjoint(y), xt, atol=1e-4)
    assert torch.allclose(op.fbp(y), xf, atol=1e-5)
    assert torch.allclose(op.A(x[1:, 1:]), y[1:, 1:], atol=1e-5)


def test_gradients_through_A_adjoint_and_fbp():
    op = build("ct:views=12", (1, 16, 16))
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    y = op.A(torch.rand(1, 1, 16, 16))
    loss = (op.A(x) - y).square().sum() + op.fbp(op.A(x)).square().sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Aᵀ is differentiable and its derivative is A: d⟨z, Aᵀy⟩/dy = A z
    z = torch.rand(1, 1, 16, 16)
    v = y.clone().requires_grad_(True)
    (dv,) = torch.autograd.grad((z * op.A_adjoint(v)).sum(), v)
    assert torch.allclose(dv, op.A(z), atol=1e-5)
    small = build("ct:views=5", (1, 6, 6))
    assert torch.autograd.gradcheck(small.A_adjoint, (torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True),))
    assert torch.autograd.gradcheck(small.A, (torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True),))
