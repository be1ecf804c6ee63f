"""DPIR: equal to deepinv's independent implementation (its ``DPIR``: HQS with ``get_DPIR_params``) on the same
denoiser and start, its noise levels and weights, the scripts' x8 self-ensemble, the exact Gaussian posterior as a
sanity bound, and smoke tests of every linear family."""

import pytest
import torch

from restore.solvers import SolverError, get_solver, solve
from restore.solvers.dpir import MODES, augment, dpir_sigmas, unaugment
from solver_testing import GAUSSIAN_SPECS, SMOKE_SPECS, gaussian_problem, run_sample, smoke_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def test_noise_levels_and_weights_are_deepinvs():
    """σ_k from 49/255 down to σ_n evenly in log σ, and ρ_k = 0.23 σ_n²/σ_k²: deepinv's ``get_DPIR_params`` gives
    the same σ_k and its step sizes are 1/ρ_k (its ρ floor, σ_n ≥ 0.01, is not reached at σ_n = 0.05)."""
    dinv = pytest.importorskip("deepinv")
    sigma = 0.05
    theirs, stepsize, iters = dinv.optim.dpir.get_DPIR_params(sigma)
    ours = dpir_sigmas(49 / 255, sigma, iters)
    assert iters == get_solver("dpir").params["steps"] == 8
    assert torch.allclose(torch.tensor(ours), theirs, rtol=1e-6, atol=0)
    rho = [0.23 * sigma**2 / s**2 for s in ours]
    assert torch.allclose(1 / torch.tensor(rho, dtype=torch.float64), stepsize.double(), rtol=1e-5)
    assert ours[0] == pytest.approx(49 / 255) and ours[-1] == pytest.approx(sigma, rel=1e-6)
    ratios = [b / a for a, b in zip(ours, ours[1:])]
    assert max(ratios) - min(ratios) < 1e-6


def test_the_x8_modes_are_the_eight_symmetries_of_the_square():
    """Mode 1 is the transpose, 2 the up-down flip, 6 the half turn (the scripts' table); all 8 differ, and each is
    undone by ``unaugment``."""
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    outs = [augment(x, m) for m in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    assert torch.equal(outs[0], x)
    assert torch.equal(outs[1], x.transpose(-2, -1))
    assert torch.equal(outs[2], x.flip(-2))
    assert torch.equal(outs[6], x.flip(-2).flip(-1))
    for m in range(8):
        assert torch.equal(unaugment(augment(x, m), m), x)
    assert len(MODES) == 8


@pytest.mark.parametrize("name", ["mask", "sr", "blur", "denoise"])
def test_equals_deepinv(name):
    """deepinv's DPIR with our prior's denoiser, started from the same mid-grey image, against ours without the x8
    self-ensemble (deepinv has none). Measured max difference 2e-7 (mask, denoise) to 3.5e-6 (SR, blur) on outputs
    of magnitude ~1.4."""
    dinv = pytest.importorskip("deepinv")
    sigma = 0.05
    prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS[name], sigma_y=sigma, seed=3)
    ours = run_sample(get_solver("dpir", x8=False, rcond=0.0), y, op, prior, [0], noise=sigma)

    class Denoiser(torch.nn.Module):
        def forward(self, x01, sigma01):
            return (prior.denoise(2 * x01 - 1, 2 * float(sigma01)) + 1) / 2

    physics = dinv.physics.DecomposablePhysics(U=op.U, U_adjoint=op.Ut, V=op.V, V_adjoint=op.Vt,
                                               mask=op.singulars(),
                                               noise_model=dinv.physics.GaussianNoise(sigma=sigma))
    with torch.no_grad():
        theirs = dinv.optim.DPIR(sigma=sigma, denoiser=Denoiser())(y, physics,
                                                                   init=torch.full((1, *op.image_shape), 0.5))
    diff = float((2 * theirs - 1 - ours).abs().max())
    assert diff < 2e-5, diff


def test_x8_cycles_the_scripts_modes():
    """Step k's denoiser sees the image under mode (k − 1) mod 8: on a 6×10 image the odd modes (a quarter turn)
    give it 10×6 inputs (seen through a white Gaussian prior's denoiser, which takes any shape); with a denoiser that commutes with every symmetry (the stationary, isotropic Gaussian prior
    on a square image) x8 changes nothing but round-off."""
    prior, op, _, y = gaussian_problem("denoise", shape=(1, 6, 10), sigma_y=0.05)
    seen = []
    prior.denoise = lambda x, s: (seen.append(tuple(x.shape[-2:])), x / (1 + s**2))[1]  # N(0, I)'s denoiser
    try:
        run_sample(get_solver("dpir", steps=10), y, op, prior, [0], noise=0.05)
    finally:
        del prior.denoise
    assert seen == [(10, 6) if MODES[k % 8][0] % 2 else (6, 10) for k in range(10)]
    assert seen[1] == (10, 6) and seen[2] == (6, 10)

    prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS["sr"], sigma_y=0.05)
    on = run_sample(get_solver("dpir"), y, op, prior, [0], noise=0.05)
    off = run_sample(get_solver("dpir", x8=False), y, op, prior, [0], noise=0.05)
    assert float((on - off).abs().max()) < 1e-5


def test_deterministic_and_counts_its_steps():
    prior, op, x_true, y = smoke_problem("blur", batch=2, sigma_y=0.01)
    a = solve(get_solver("dpir"), y, op, prior, seeds=[0, 1], noise=0.01)
    b = solve(get_solver("dpir"), y, op, prior, seeds=[5, 9], noise=0.01, samples=3)
    assert torch.equal(a.x, b.x) and b.samples == 1
    assert a.cost.nfe == 8
    alone = solve(get_solver("dpir"), y[1:], op, prior, seeds=[1], noise=0.01)
    assert torch.allclose(alone.x, a.x[1:], atol=1e-5)


def test_near_the_posterior_mean():
    """With the exact Gaussian prior, DPIR (a MAP-style splitting, not a sampler) lands near the posterior mean,
    which is also the MAP estimate here: measured distance 0.01–0.22 relative to what the measurement adds (the
    prior mean is at 1.0)."""
    from solver_testing import posterior_stats

    for name in ("sr", "mask", "blur", "denoise"):
        sigma = 0.05
        prior, op, _, y = gaussian_problem(GAUSSIAN_SPECS[name], sigma_y=sigma)
        x = run_sample(get_solver("dpir"), y, op, prior, [0], noise=sigma)
        err, _, _, res, res_prior = posterior_stats(x, prior, op, y, sigma)
        assert err < 0.3, (name, err)
        assert res < 0.5 * res_prior


REFUSED = {"phase", "hdr"}


@pytest.mark.parametrize("family", list(SMOKE_SPECS))
def test_smoke_every_family(family):
    prior, op, x_true, y = smoke_problem(family, batch=2, sigma_y=0.01)
    make = lambda: get_solver("dpir", steps=4)  # noqa: E731
    if family in REFUSED:
        with pytest.raises(SolverError, match="dpir"):
            solve(make(), y, op, prior, seeds=[0, 1], noise=0.01)
        return
    a = run_sample(make(), y, op, prior, [0, 1], noise=0.01)
    assert a.shape == x_true.shape and bool(torch.isfinite(a).all())


def test_presets_follow_the_task():
    import operators

    def preset(spec, shape=(3, 16, 16)):
        return get_solver("dpir").auto_preset(operators.build(spec, shape, seeds=[0]))

    assert preset("sr:factor=4") == "sr4"
    assert preset("mask:kind=random,fraction=0.7") == "inpaint-random"
    assert preset("blur:kind=gaussian,size=5,std=1.0") == "deblur-gauss"
    assert preset("ct:views=8", (1, 16, 16)) == "ct"
    assert preset("denoise", (1, 16, 16)) == "default"
    assert preset("mri:accel=4,center=0.08,pattern=random", (1, 16, 16)) == "mri"
    assert get_solver("dpir", preset="mri").params["steps"] == 40
    sr4 = get_solver("dpir", preset="sr4").params
    assert sr4["steps"] == 24 and sr4["sigma_min"] == pytest.approx(4 / 255) and sr4["lam"] == 0.1
    assert get_solver("dpir", preset="deblur-gauss").params["lam"] == 0.1
    assert get_solver("dpir", preset="deblur-motion").params["lam"] == 0.23
    assert get_solver("dpir", preset="inpaint-random").params["steps"] == 40
    with pytest.raises(SolverError, match="lam"):
        get_solver("dpir", lam=0)


def test_the_ct_preset_ends_at_the_noise_fbp_passes_on():
    """CT: a sinogram entry sums about N pixels, so σ_n there is a far smaller noise in the image. The ``ct`` preset
    (``sigma_end`` < 0) ends the schedule at the standard deviation of A⁺n: equal to that of scikit-image's
    ``iradon`` (ramp filter) of another draw of white sinogram noise to 3%, 0.64 σ_n/√views at 30 and 60 views and
    independent of the image size; the solver's last denoising is at that level (2σ on the prior's scale)."""
    skimage_transform = pytest.importorskip("skimage.transform")
    import numpy as np

    import operators
    from restore.solvers.dpir import passed_noise

    sigma = 0.025
    for views, n in [(60, 64), (30, 64), (60, 128)]:
        op = operators.build(f"ct:views={views}", (1, n, n), seeds=[0])
        y = op.A(torch.zeros(1, 1, n, n))
        ours = passed_noise(op, y, sigma)
        sino = sigma * np.random.default_rng(1).standard_normal((y.shape[-1], views))  # skimage: (bins, views)
        theirs = skimage_transform.iradon(sino, theta=np.linspace(0, 180, views, endpoint=False), circle=False,
                                          filter_name="ramp", output_size=n).std()
        assert ours == pytest.approx(theirs, rel=0.03), (views, n, ours, theirs)
        assert ours == pytest.approx(0.64 * sigma / views**0.5, rel=0.05), (views, n, ours)
        assert ours < sigma / 5

    op = operators.build("ct:views=30", (1, 16, 16), seeds=[0])
    solver = get_solver("dpir", preset=get_solver("dpir").auto_preset(op))
    assert solver.preset == "ct" and solver.params["sigma_end"] < 0
    prior, _, _, _ = gaussian_problem("denoise", shape=(1, 16, 16))
    y = operators.measure(op, torch.full((1, 1, 16, 16), 0.5), noise=sigma, seeds=[0])
    levels = []
    prior.denoise = lambda x, s: (levels.append(s), x / (1 + s**2))[1]
    try:
        run_sample(solver, y, op, prior, [0], noise=sigma)
    finally:
        del prior.denoise
    assert levels[0] == pytest.approx(2 * 49 / 255, rel=1e-5)
    assert levels[-1] == pytest.approx(2 * passed_noise(op, y, sigma), rel=1e-5)
    assert get_solver("dpir", preset="deblur-gauss").params["sigma_end"] == 0  # the other tasks end at σ_n
