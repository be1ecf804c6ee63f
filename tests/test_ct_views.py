"""More CT views must not make a solver worse: the error of every solver that runs on CT, at 30, 60 and 90 views of
the same slice (same noise σ = 0.025 on [0, 1], same seed), does not grow as views are added.

The bug this guards against: RED-Diff's data term was the mean over the V·M sinogram entries of the normalised
operator A/‖A‖, and both ‖AᵀA‖ and V·M grow in proportion to V, so the data weighed 1/V: on held-out slices it scored
27.5, 25.8 and 24.2 dB at 30, 60 and 90 views (fast preset, circle=true; FBP 25.1, 28.3, 28.8 dB). Now 29.7, 32.4,
33.2 dB on the same slices (``restore/solvers/reddiff.py``, ``_data_weight``).

Tolerance: a solver may score up to ``TOL`` = 0.3 dB lower with more views. Measured on the phantom (seeds 0 and 1):
FBP 23.6, 28.8, 29.8 dB; the cheap RED-Diff run 21.7, 23.6, 24.1 dB (seed 1: 22.1, 24.3, 24.8), i.e. +1.9–2.2 dB from
30 to 60 views and +0.5 dB from 60 to 90, with a seed-to-seed spread of 0.45–0.75 dB at a fixed view count; with the
old weighting the same run scored 19.3, 18.8, 18.5 dB, which fails here. DPS and DAPS at these cheap settings score
within 0.05 dB of themselves at every view count (DPS 10.49 dB at all three, DAPS 18.25, 18.28, 18.28), and so do
their benchmark presets on a held-out slice (DPS 23.65, 23.68, 23.68 dB; DAPS 28.45, 28.75, 28.77). They do use the
data (DPS's 20-step run: 6.8 dB without guidance, 12.4 with ζ = 4) but not what the extra views add — most likely
because on the normalised operator A/‖A‖ (the largest eigenvalue of AᵀA scaled to 1) every direction but the few
low-frequency ones that 30 views already fix has a tiny eigenvalue. Not a growing error, so not failed here; see
docs/benchmarks.md. 0.3 dB is below every gain RED-Diff shows and below the drop of the old weighting.

DDNM does not run on CT: the Radon transform has no SVD and FBP is not an exact pseudo-inverse (it refuses).
"""

from __future__ import annotations

import pytest
import torch

import operators
import priors
from restore.solvers import SolverError, get_solver, solve

pytestmark = pytest.mark.usefixtures("one_thread")

VIEWS = (30, 60, 90)
SIGMA = 0.025
TOL = 0.3
#: cheap settings (the whole module runs in about a minute on one core); RED-Diff: the fast preset's lr 0.5 is too
#: coarse for 20 steps, 0.05 keeps them stable
CHEAP = {
    "pinv": dict(),
    "reddiff": dict(steps=20, lr=0.05),
    "dps": dict(preset="fast", steps=5),
    "daps": dict(preset="daps-100", annealing_steps=4, ode_steps=1, mcmc_steps=10),
}


def phantom128() -> torch.Tensor:
    skimage = pytest.importorskip("skimage")
    from skimage.transform import resize

    x = resize(skimage.data.shepp_logan_phantom(), (128, 128), anti_aliasing=True)
    return torch.from_numpy(x).float()[None, None].clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).square().mean()))


def scores(x: torch.Tensor, name: str, params: dict, seed: int = 0, spec: str = "ct:views={v}") -> list[float]:
    prior = priors.resolve("ct")
    out = []
    for v in VIEWS:
        op = operators.build(spec.format(v=v), tuple(x.shape[1:]), seeds=[seed])
        y = operators.measure(op, x, SIGMA, [seed])
        out.append(psnr(solve(get_solver(name, **params), y, op, prior, [seed], noise=SIGMA).x, x))
    return out


def assert_not_worse(name: str, got: list[float]) -> None:
    for (v0, p0), (v1, p1) in zip(zip(VIEWS, got), zip(VIEWS[1:], got[1:])):
        assert p1 >= p0 - TOL, f"{name}: {p0:.2f} dB at {v0} views but {p1:.2f} dB at {v1} ({got})"


@pytest.mark.parametrize("name", list(CHEAP))
def test_error_does_not_grow_with_the_views(name):
    got = scores(phantom128(), name, CHEAP[name])
    assert_not_worse(name, got)
    if name in ("pinv", "reddiff"):  # these two use the extra views (measured: FBP +5.2, +1.0 dB; RED-Diff +1.9, +0.5)
        assert got[2] > got[0] + 1.0, got


def test_ddnm_refuses_ct():
    x = phantom128()
    op = operators.build("ct:views=30", tuple(x.shape[1:]), seeds=[0])
    with pytest.raises(SolverError, match="SVD or an exact pseudo-inverse"):
        solve(get_solver("ddnm"), operators.measure(op, x, SIGMA, [0]), op, priors.resolve("ct"), [0], noise=SIGMA)


def test_reddiff_ct_data_weight_does_not_depend_on_the_views():
    """The data/regulariser balance RED-Diff uses on CT: v·w·‖AᵀA‖ (the weight of the normalised operator's
    residual) is the same at every view count; with the official mean over the V·M entries it was n_x/(V·M)."""
    from restore.solvers.base import operator_gain
    from restore.solvers.reddiff import CT_BALANCE, _data_weight, _measured_entries

    balances = []
    for v in VIEWS:
        op = operators.build(f"ct:views={v}", (1, 32, 32), seeds=[0])
        y = torch.zeros(1, *op.measurement_shape())
        n_y = _measured_entries(op, y).reshape(-1, 1, 1, 1)
        w = _data_weight(1.0, op, 1, "cpu", "auto", 32 * 32, n_y)
        balances.append(float(w) * float(operator_gain(op, 1, "cpu")))
        assert float(_data_weight(1.0, op, 1, "cpu", "off", 32 * 32, n_y)) == pytest.approx(1 / float(n_y))
    assert balances == pytest.approx([CT_BALANCE / (32 * 32)] * len(VIEWS), rel=1e-3)


@pytest.mark.shared
@pytest.mark.slow
def test_reddiff_fast_preset_on_a_held_out_slice(shared):
    """The issue's own setting: the fast preset on a held-out DICOM slice resized to 128² (the `ct` prior's size).
    Measured on ID_0063: 30.55, 33.34, 34.28 dB at 30, 60, 90 views (was 27.99, 26.21, 24.34 with circle=true)."""
    from restore.io import load_image

    files = sorted((shared / "test" / "ct_dicom").glob("*.dcm"))
    if not files:
        pytest.skip("no DICOM slices in ../shared/data/test/ct_dicom")
    x = load_image(files[len(files) // 4], hu_window="-1000,1000")[None]
    x = torch.nn.functional.interpolate(x, size=(128, 128), mode="bicubic", antialias=True,
                                        align_corners=False).clamp(0, 1)
    got = scores(x, "reddiff", dict(preset="fast"))
    assert_not_worse("reddiff", got)
    assert got[2] > got[0] + 2.0, got
