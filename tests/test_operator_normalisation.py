"""Solvers whose step sizes assume a unit-scale operator (DPS's ζ, DAPS's lr, RED-Diff's λ balance) solve with the
normalised operator A/‖A‖ when ‖AᵀA‖ is large (CT's Radon transform): the gain against a dense eigen-decomposition,
the "auto" rule leaving every official task alone, and the invariance it buys — the same problem written with c·A
and c·y gives the same restoration."""

import numpy as np
import pytest
import torch

import operators
from restore.solvers import get_solver
from restore.solvers.base import GAIN_LIMIT, SolverError, data_term_scale, operator_gain
from tests.solver_testing import run_sample, smoke_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense(op, shape):
    n = int(np.prod(shape))
    cols = [op.A(torch.eye(n)[i].reshape(1, *shape)).reshape(-1) for i in range(n)]
    return torch.stack(cols, 1).double()


def test_operator_gain_is_the_top_eigenvalue_of_the_dense_normal_matrix():
    op = operators.build("ct:views=12", (1, 12, 12), seeds=[0])
    a = _dense(op, (1, 12, 12))
    top = float(np.linalg.eigvalsh((a.T @ a).numpy()).max())
    gain = operator_gain(op, 2, "cpu")
    assert gain.shape == (2,) and torch.allclose(gain, torch.full((2,), top, dtype=gain.dtype), rtol=1e-3)
    assert top > GAIN_LIMIT


@pytest.mark.parametrize("spec", ["mask:kind=random,fraction=0.7", "mask:kind=box,size=8,margin=2", "sr:factor=4",
                                  "blur:kind=gaussian,size=9,std=3.0", "blur:kind=motion,size=9,intensity=0.5",
                                  "mri:accel=4,center=0.08,pattern=random"])
def test_auto_leaves_every_official_task_alone(spec):
    shape = (1, 16, 16) if spec.startswith("mri") else (3, 16, 16)
    op = operators.build(spec, shape, seeds=[0, 1])
    assert torch.equal(data_term_scale(op, 2, "cpu", "auto"), torch.ones(2, 1, 1, 1))
    assert torch.equal(data_term_scale(op, 2, "cpu", "off"), torch.ones(2, 1, 1, 1))


def test_auto_normalises_ct_and_on_normalises_everything():
    ct = operators.build("ct:views=12", (1, 16, 16), seeds=[0])
    scale = data_term_scale(ct, 1, "cpu", "auto")
    assert torch.allclose(scale.view(-1), 1 / operator_gain(ct, 1, "cpu"))
    sr = operators.build("sr:factor=4", (3, 16, 16), seeds=[0])
    assert torch.allclose(data_term_scale(sr, 1, "cpu", "on").view(-1), torch.tensor([16.0]), rtol=1e-4)
    with pytest.raises(SolverError, match="normalise"):
        data_term_scale(sr, 1, "cpu", "sometimes")
    for name in ("dps", "daps", "reddiff"):
        with pytest.raises(SolverError, match="normalise"):
            get_solver(name, normalise="sometimes")


class Scaled:
    """c·A for a linear operator A without using its SVD (so the gain is measured by power iteration)."""

    has_svd = False

    def __init__(self, op, c):
        self._op, self.c = op, c

    def __getattr__(self, name):
        return getattr(self._op, name)

    def A(self, x):
        return self.c * self._op.A(x)

    def A_adjoint(self, y):
        return self.c * self._op.A_adjoint(y)

    def A_pinv(self, y):
        return self._op.A_pinv(y / self.c)


class ScaledSVD(Scaled):
    """c·A with the SVD of A (singular values times c): DAPS draws its Langevin steps in closed form on it."""

    has_svd = True

    def singulars(self):
        return self.c * self._op.singulars()


def test_daps_closed_form_on_a_scaled_operator_is_the_unit_one():
    prior, op, _, y = smoke_problem("mask-random")
    params = dict(annealing_steps=3, ode_steps=2, mcmc_steps=5, closed_form="on")
    plain = run_sample(get_solver("daps", **params), y, op, prior, seeds=[3])
    scaled = run_sample(get_solver("daps", **params), 10.0 * y, ScaledSVD(op, 10.0), prior, seeds=[3])
    assert torch.allclose(plain, scaled, atol=2e-4), float((plain - scaled).abs().max())


@pytest.mark.parametrize("name,params", [("dps", dict(steps=6, scale=0.5)),
                                         # the J Langevin steps one by one on both (Scaled has no SVD)
                                         ("daps", dict(annealing_steps=3, ode_steps=2, mcmc_steps=5,
                                                       closed_form="off")),
                                         ("reddiff", dict(steps=6, lr=0.1))])
def test_a_scaled_operator_gives_the_same_restoration_as_the_unit_one(name, params):
    prior, op, _, y = smoke_problem("mask-random")
    c = 10.0  # ‖(cA)ᵀ(cA)‖ = 100 > GAIN_LIMIT: normalised
    plain = run_sample(get_solver(name, **params), y, op, prior, seeds=[3])
    scaled = run_sample(get_solver(name, **params), c * y, Scaled(op, c), prior, seeds=[3])
    assert torch.allclose(plain, scaled, atol=2e-4), float((plain - scaled).abs().max())
    # without normalisation the same problem is solved differently (the step sizes see a 100× stronger data term)
    off = run_sample(get_solver(name, normalise="off", **params), c * y, Scaled(op, c), prior, seeds=[3])
    assert not torch.allclose(plain, off, atol=1e-2)
