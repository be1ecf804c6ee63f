"""DiffPIR: equal to deepinv's independent implementation on identical noise (after its three documented differences
are put on the same footing), the data step against dense linear algebra, the exact Gaussian posterior as a sanity
bound, and smoke tests of every linear family (the SVD path and the conjugate-gradient path)."""

import contextlib

import numpy as np
import pytest
import torch

from operators.seeding import generators
from restore.solvers import SolverError, get_solver, solve
from restore.solvers.diffpir import diffpir_grid
from solver_testing import GAUSSIAN_SPECS, SMOKE_SPECS, gaussian_problem, run_sample, smoke_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grid_is_the_scripts_quad_grid():
    grid = diffpir_grid(1000, 100)
    assert grid[0] == 999 and grid[-1] == 0 and len(grid) == 100
    assert all(a > b for a, b in zip(grid, grid[1:]))
    seq = np.sqrt(np.linspace(0, 1000**2, 100)).astype(int)
    assert grid[1] == 999 - seq[1] == 999 - 100   # √(10⁶/99) = 100.5


@pytest.mark.parametrize("spec", [GAUSSIAN_SPECS["sr"], GAUSSIAN_SPECS["blur"], "blur:kind=motion,size=5"])
def test_data_step_is_the_regularised_least_squares(spec):
    """The SVD closed form and the conjugate-gradient path both equal (AᵀA + ρI)⁻¹(Aᵀy + ρx₀) from a dense A."""
    prior, op, x_true, y = gaussian_problem(spec, sigma_y=0.01)
    n = int(np.prod(op.image_shape))
    basis = torch.eye(n).reshape(n, *op.image_shape)
    A = torch.stack([op.A(b[None]).reshape(-1) for b in basis], 1).double()
    if A.is_complex():
        pytest.skip("complex operator")
    x0 = torch.rand(1, *op.image_shape)
    rho = 0.3
    ref = torch.linalg.solve(A.T @ A + rho * torch.eye(n, dtype=A.dtype), A.T @ y.reshape(-1).double()
                             + rho * x0.reshape(-1).double())
    solver = get_solver("diffpir", rcond=0.0)
    ours = solver._prox(y, op)(x0, rho)
    assert torch.allclose(ours.reshape(-1).double(), ref, atol=2e-5), (ours.reshape(-1) - ref).abs().max()
    if getattr(op, "has_svd", False):  # the same problem through the CG path
        op.has_svd = False
        try:
            cg = solver._prox(y, op)(x0, rho)
        finally:
            del op.has_svd
        assert torch.allclose(cg.reshape(-1).double(), ref, atol=1e-4), (cg.reshape(-1) - ref).abs().max()


# ---------------------------------------------------------------------------------------------------------------------
# deepinv's DiffPIR on identical noise


@contextlib.contextmanager
def randn_from(gens):
    """torch.randn_like drawing image i from gens[i] the way ``randn_like_per_image`` does (deepinv draws with
    torch.randn_like)."""
    original = torch.randn_like

    def draw(x, *args, **kwargs):
        return torch.stack([torch.randn(tuple(x.shape[1:]), generator=g) for g in gens]).to(x.dtype)

    torch.randn_like = draw
    try:
        yield
    finally:
        torch.randn_like = original


def deepinv_pieces(prior, op, sigma):
    dinv = pytest.importorskip("deepinv")
    ac = prior.alphas_cumprod.double()
    reduced = ((1 - ac) / ac).sqrt()

    class Denoiser(torch.nn.Module):
        """deepinv's denoiser interface D(x, σ) on [0, 1] from our ε-network: σ on [0, 1] is σ̄/2."""

        def forward(self, x01, sigma01):
            t = int((reduced - 2 * float(sigma01)).abs().argmin())
            a = float(ac[t])
            x_t = a**0.5 * (2 * x01 - 1)
            eps, _ = prior.model_output(x_t, torch.full((x01.shape[0],), float(t)))
            return ((x_t - (1 - a) ** 0.5 * eps) / a**0.5 + 1) / 2

    physics = dinv.physics.DecomposablePhysics(U=op.U, U_adjoint=op.Ut, V=op.V, V_adjoint=op.Vt,
                                               mask=op.singulars(),
                                               noise_model=dinv.physics.GaussianNoise(sigma=sigma))
    return dinv, Denoiser(), physics


@pytest.mark.parametrize("spec", [GAUSSIAN_SPECS["mask"], "sr:factor=2,kernel=average", GAUSSIAN_SPECS["blur"]])
def test_equals_deepinv_on_identical_noise(spec):
    """deepinv's DiffPIR with λ/2 (its prox weights ‖x − x₀‖² by 2ρ), started from A⁺y, against ours: its output is
    the x_t that our last step denoises, so that is what is compared. Measured max difference 4e-6 (mask), and
    similar for the block-mean SR and the blur. (With the bicubic SR, whose smallest nonzero singular values are
    ~1e-6, the first steps' ρ ~ 1e-7 makes both prox steps near-pseudo-inverses that amplify float32 rounding
    differently: 1.3e-2 after 5 steps, 1.1e-4 after 30, shrinking as later steps weight the prior.)"""
    sigma, lam, steps = 0.05, 2.0, 30
    prior, op, _, y = gaussian_problem(spec, sigma_y=sigma, seed=3)
    dinv, denoiser, physics = deepinv_pieces(prior, op, sigma)
    seen = []
    original = prior.model_output
    prior.model_output = lambda x, t: (seen.append(x.clone()), original(x, t))[1]
    try:
        run_sample(get_solver("diffpir", steps=steps, lam=lam, zeta=0.3, rcond=0.0), y, op, prior, [5], noise=sigma)
    finally:
        del prior.model_output
    theirs = dinv.sampling.DiffPIR(denoiser, dinv.optim.data_fidelity.L2(), sigma=sigma, max_iter=steps, zeta=0.3,
                                   lambda_=lam / 2)
    with randn_from(generators([5], "solver/diffpir/0")), torch.no_grad():
        out = theirs(y, physics, x_init=op.A_pinv(y))
    diff = float((2 * out - 1 - seen[-1]).abs().max())
    assert diff < 5e-5, diff
    assert len(seen) == steps


# ---------------------------------------------------------------------------------------------------------------------
# the Gaussian posterior as a sanity bound; smoke


def test_moves_to_the_posterior_mean():
    """DiffPIR is a plug-and-play sampler, not an exact one: measured distance of the 32-sample mean to the posterior
    mean 0.09–0.25 (relative to what the measurement adds), against 1.0 for the prior mean."""
    from test_solvers_dps_ddnm import many, posterior_stats

    for name in ("sr", "mask", "denoise"):
        sigma = 0.05
        prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS[name], sigma_y=sigma)
        x = run_sample(get_solver("diffpir", steps=50), many(y, 32), op, prior, range(32), noise=sigma)
        err, mc, spread, res, res_prior = posterior_stats(x, prior, op, y, sigma)
        assert err < 0.4, (name, err)
        assert res < 0.3 * res_prior


REFUSED = {"phase", "hdr"}


@pytest.mark.parametrize("family", list(SMOKE_SPECS))
def test_smoke_every_family(family):
    prior, op, x_true, y = smoke_problem(family, batch=2, sigma_y=0.01)
    make = lambda: get_solver("diffpir", steps=4)  # noqa: E731
    if family in REFUSED:
        with pytest.raises(SolverError, match="diffpir"):
            solve(make(), y, op, prior, seeds=[0, 1], noise=0.01)
        return
    a = run_sample(make(), y, op, prior, [0, 1], noise=0.01)
    assert a.shape == x_true.shape and bool(torch.isfinite(a).all())
    assert torch.equal(a, run_sample(make(), y, op, prior, [0, 1], noise=0.01))
    alone = run_sample(make(), y[1:], op, prior, [1], noise=0.01)
    # batch independence up to float32 rounding of batched convolutions; on 8-view CT the first steps' data step
    # (ρ ~ 1e-7: nearly a pseudo-inverse of a very underdetermined A, by conjugate gradients) amplifies it to 6e-3
    # (a shared generator would differ by O(0.1))
    tol = 2e-2 if family == "ct" else 1e-3
    assert torch.allclose(alone, a[1:], rtol=1e-5, atol=tol), (alone - a[1:]).abs().max()


def test_presets_follow_the_task():
    import operators

    op = operators.build("mask:kind=random,fraction=0.7", (3, 16, 16), seeds=[0])
    solver = get_solver("diffpir")
    assert solver.auto_preset(op) == "inpaint-random"
    assert get_solver("diffpir", preset="inpaint-random").params["zeta"] == 1.0
    mri = operators.build("mri:accel=4,center=0.08,pattern=random", (1, 16, 16), seeds=[0])
    assert solver.auto_preset(mri) == "mri" and get_solver("diffpir", preset="mri").params["zeta"] == 1.0
    assert get_solver("diffpir").params["zeta"] == 0.1  # the scripts' default elsewhere
    with pytest.raises(SolverError, match="zeta"):
        get_solver("diffpir", zeta=1.5)
