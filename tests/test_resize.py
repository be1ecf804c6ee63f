"""Oracle tests for the super-resolution family against independent references (torch's antialiased bicubic, which
is PIL's Keys a = −0.5 filter, average pooling, numpy's pseudo-inverse). Generic properties: test_generic.py with
tests/cases_resize.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from operators import OperatorError, build, parse


def torch_bicubic(x: torch.Tensor, f: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=1 / f, mode="bicubic", antialias=True, align_corners=False)


def dense(op) -> np.ndarray:
    n = int(np.prod(op.image_shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *op.image_shape)
    return op.A(basis).reshape(n, -1).T.numpy()


@pytest.mark.parametrize("f", [2, 3, 4, 8])
def test_bicubic_interior_equals_torch_antialiased_bicubic(f):
    # output pixels 2 … n/f − 3 see no boundary: there the MATLAB and PIL weights are the same
    op = build(f"sr:factor={f}", (2, 12 * f, 10 * f))
    x = torch.rand(2, 2, 12 * f, 10 * f, dtype=torch.float64)
    torch.testing.assert_close(op.A(x)[..., 2:-2, 2:-2], torch_bicubic(x, f)[..., 2:-2, 2:-2], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("f", [2, 4])
def test_bicubic_boundary_is_matlab_symmetric(f):
    # MATLAB's boundary = the interior rule applied to the image padded symmetrically (edge pixel repeated)
    op = build(f"sr:factor={f}", (1, 8 * f, 6 * f))
    x = torch.rand(1, 1, 8 * f, 6 * f, dtype=torch.float64)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (2 * f, 2 * f), (2 * f, 2 * f)), mode="symmetric"))
    torch.testing.assert_close(op.A(x), torch_bicubic(padded, f)[..., 2:-2, 2:-2], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("spec", ["sr2", "sr:factor=3", "sr4", "sr8", "sr4-avg"])
def test_constant_image_stays_constant(spec):
    op = build(spec, (3, 48, 72))
    y = op.A(torch.full((1, 3, 48, 72), 0.37))
    f = op.factor
    assert y.shape == (1, 3, 48 // f, 72 // f) == (1, *op.measurement_shape())
    torch.testing.assert_close(y, torch.full_like(y, 0.37), atol=1e-6, rtol=0)


def test_average_is_pooling_and_its_pinv_is_replication():
    op = build("sr4-avg", (3, 16, 24))
    x = torch.rand(2, 3, 16, 24)
    torch.testing.assert_close(op.A(x), F.avg_pool2d(x, 4))
    y = torch.rand(2, 3, 4, 6)
    torch.testing.assert_close(op.A_pinv(y), y.repeat_interleave(4, -2).repeat_interleave(4, -1))


@pytest.mark.parametrize("spec", ["sr:factor=2", "sr:factor=4", "sr:factor=2,kernel=average"])
def test_svd_and_pinv_match_the_dense_operator(spec):
    op = build(spec, (1, 8, 12))
    a = dense(op)
    s = op.singulars().double().numpy().ravel()
    np.testing.assert_allclose(np.sort(s[s > 0])[::-1], np.linalg.svd(a, compute_uv=False), atol=1e-6)
    assert (s > 0).sum() == a.shape[0]  # full row rank: the pseudo-inverse is exact
    y = torch.randn(2, *op.measurement_shape(), dtype=torch.float64)
    reference = y.reshape(2, -1).numpy() @ np.linalg.pinv(a).T
    np.testing.assert_allclose(op.A_pinv(y).reshape(2, -1).numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(op.svd_pinv(y.float()).reshape(2, -1).numpy(), reference, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 30, 32), (1, 32, 18)])
def test_factor_not_dividing_the_size_is_refused(shape):
    with pytest.raises(OperatorError, match="divisible by 4"):
        build("sr4", shape)


def test_presets():
    assert str(parse("sr4")) == "sr:factor=4,kernel=bicubic"
    assert parse("sr2")["factor"] == 2 and parse("sr8")["factor"] == 8
    assert parse("sr4-avg") == parse("sr:factor=4,kernel=average")
