"""Generic operator tests, run over every configuration listed in tests/cases_*.py.

Each case is dict(id, spec, shape=(C, H, W), pinv_tol): ``pinv_tol`` bounds ‖A⁺(A r) − r‖/‖r‖ for r in the range
of Aᴴ (None skips that test, e.g. for nonlinear operators).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import operators
from operators import OperatorError, build, inner, measure, parse
from operators.base import LinearOperator, autograd_adjoint

CASES = []
for _path in sorted(Path(__file__).parent.glob("cases_*.py")):
    CASES += importlib.import_module(_path.stem).CASES
IDS = [c["id"] for c in CASES]
# random test images fill the square: the circle=true CT cases are meant to see them cropped, not to warn about it
pytestmark = pytest.mark.filterwarnings("ignore::operators.ct.OutsideCircleWarning")
LINEAR = [c for c in CASES if operators.OPERATORS[parse(c["spec"]).family].linear]
# whether an operator has an SVD can depend on its parameters (single- vs multi-coil MRI): ask a built one
SVD = [c for c in LINEAR if build(c["spec"], c["shape"], seeds=[0]).has_svd]


def image(op, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *op.image_shape)
    x = torch.rand(shape, generator=g)
    if op.image_dtype.is_complex:
        x = torch.complex(x, torch.rand(shape, generator=g))
    return x


def like_measurement(op, batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probe = op.A(image(op, batch))
    y = torch.randn(probe.shape, generator=g)
    if probe.is_complex():
        y = torch.complex(y, torch.randn(probe.shape, generator=g))
    mask = op.noise_mask()
    return y * mask if mask is not None else y


def norm(t: torch.Tensor) -> torch.Tensor:
    return inner(t, t).sqrt()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((norm(a - b) / norm(b).clamp_min(1e-12)).max())


def ids(cases):
    return [c["id"] for c in cases]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_spec_round_trip(case):
    op = build(case["spec"], case["shape"], seeds=[0])
    assert parse(str(op)) == op.spec
    assert parse(str(op.spec)) == op.spec
    assert str(parse(str(op.spec))) == str(op.spec)


@pytest.mark.parametrize("case", LINEAR, ids=ids(LINEAR))
def test_adjoint_identity(case):
    op = build(case["spec"], case["shape"], seeds=[1, 2])
    x, y = image(op, 2), like_measurement(op, 2)
    lhs, rhs = inner(op.A(x), y), inner(x, op.A_adjoint(y))
    scale = norm(op.A(x)) * norm(y)
    assert float(((lhs - rhs).abs() / scale).max()) < 1e-5


@pytest.mark.parametrize("case", LINEAR, ids=ids(LINEAR))
def test_explicit_adjoint_equals_autograd(case):
    op = build(case["spec"], case["shape"], seeds=[1, 2])
    y = like_measurement(op, 2)
    x0 = torch.zeros((2, *op.image_shape), dtype=op.image_dtype)
    reference = autograd_adjoint(op.A, x0, y)
    assert rel_err(op.A_adjoint(y), reference) < 1e-5


@pytest.mark.parametrize("case", [c for c in LINEAR if c["pinv_tol"] is not None],
                         ids=ids([c for c in LINEAR if c["pinv_tol"] is not None]))
def test_pinv_reproduces_range_of_adjoint(case):
    op = build(case["spec"], case["shape"], seeds=[3, 4])
    r = op.A_adjoint(op.A(image(op, 2)))
    assert rel_err(op.A_pinv(op.A(r)), r) < case["pinv_tol"]


@pytest.mark.parametrize("case", SVD, ids=ids(SVD))
def test_svd_pieces(case):
    op = build(case["spec"], case["shape"], seeds=[5, 6])
    x = image(op, 2)
    s = op.singulars()
    c = op.Vt(x)
    assert rel_err(op.V(c), x) < 1e-5, "V must invert Vt (orthonormal V)"
    assert rel_err(op.U(s * c), op.A(x)) < 1e-5, "A = U diag(s) Vᴴ"
    assert rel_err(op.Ut(op.A(x)), s * c) < 1e-5, "Uᴴ A = diag(s) Vᴴ"
    keep = (s.abs() > 0).to(c.dtype)

    def project(v):  # onto the row space of A: V 1[s>0] Vᴴ
        return op.V(keep * op.Vt(v))

    p = project(x)
    assert rel_err(project(p), p) < 1e-5, "row-space projection must be idempotent"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_finite(case):
    op = build(case["spec"], case["shape"], seeds=[7])
    x = image(op, 2).requires_grad_(True)
    y = op.A(x)
    (y.abs() ** 2).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_per_image_parameters(case):
    pair = build(case["spec"], case["shape"], seeds=[3, 4])
    x = image(pair, 1).expand(2, *pair.image_shape).contiguous()
    y = pair.A(x)
    alone = build(case["spec"], case["shape"], seeds=[4])
    assert torch.allclose(alone.A(x[:1])[0], y[1], atol=1e-6)
    assert torch.allclose(pair.select(1).A(x[:1])[0], y[1], atol=1e-6)
    assert torch.allclose(pair.select(0).A(x[:1])[0], y[0], atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_seed_same_measurement_whatever_the_batch(case):
    seeds = [5, 6, 7]
    op = build(case["spec"], case["shape"], seeds=seeds)
    x = image(op, 3)
    y = measure(op, x, 0.05, seeds)
    single = build(case["spec"], case["shape"], seeds=[6])
    y1 = measure(single, x[1:2], 0.05, [6])
    assert torch.allclose(y[1], y1[0], atol=1e-6)
    other = measure(build(case["spec"], case["shape"], seeds=[8]), x[1:2], 0.05, [8])
    assert not torch.allclose(other[0], y1[0])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_noise_only_where_measured(case):
    op = build(case["spec"], case["shape"], seeds=[1])
    x = image(op, 1)
    y = measure(op, x, 0.1, [1])
    mask = op.noise_mask()
    residual = y - op.A(x)
    if mask is None:
        assert float(residual.abs().std()) > 0.05
    else:
        assert float((residual * (1 - mask)).abs().max()) == 0.0
        assert float((residual * mask).abs().max()) > 0.0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_round_trip(case):
    op = build(case["spec"], case["shape"], seeds=[9, 10])
    state = {k: v.clone() for k, v in op.state_dict().items()}
    again = build(case["spec"], case["shape"], seeds=[0, 0], state=state)
    x = image(op, 2)
    assert torch.allclose(again.A(x), op.A(x), atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_wrong_image_shape_is_refused(case):
    op = build(case["spec"], case["shape"], seeds=[0])
    c, h, w = op.image_shape
    with pytest.raises(OperatorError, match="shape"):
        measure(op, torch.rand(1, c, h + 2, w), 0.0, [0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_device_move(case):
    op = build(case["spec"], case["shape"], seeds=[1])
    x = image(op, 1)
    on_gpu = build(case["spec"], case["shape"], seeds=[1], device="cuda")
    assert torch.allclose(on_gpu.A(x.cuda()).cpu(), op.A(x), atol=1e-4)
    if isinstance(op, LinearOperator):
        y = op.A(x)
        assert torch.allclose(on_gpu.A_adjoint(y.cuda()).cpu(), op.A_adjoint(y), atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_image_shape_recovered_from_measurement_shape(case):
    op = build(case["spec"], case["shape"], seeds=[0])
    assert type(op).image_shape_for(op.spec, op.measurement_shape()) == op.image_shape
