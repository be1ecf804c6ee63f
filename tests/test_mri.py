"""Oracle tests for the MRI operator: numpy FFTs, an independent numpy re-statement of fastMRI's mask formulas,
dense-matrix pseudo-inverses, coil maps and errors. The generic checks (adjoint, autograd, ...) run from
tests/cases_mri.py in test_generic.py."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from operators import OperatorError, build, parse
from operators.mri import _reflect, birdcage_maps
from operators.seeding import generators
from operators.simple import fft2c, ifft2c

CASES = importlib.import_module("cases_mri").CASES


def np_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def rand_image(op, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *op.image_shape), generator=g, dtype=torch.float64)
    if op.complex:
        x = torch.complex(x, torch.rand(x.shape, generator=g, dtype=torch.float64))
    return x.to(op.image_dtype)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# --- independent numpy re-statement of fastMRI's subsample.py (RandomMaskFunc, classic EquispacedMaskFunc) ---------
def fastmri_random(num_cols, center_fraction, acceleration, uniform):
    num_low_freqs = int(round(num_cols * center_fraction))
    prob = (num_cols / acceleration - num_low_freqs) / (num_cols - num_low_freqs)
    mask = uniform < prob
    pad = (num_cols - num_low_freqs + 1) // 2
    mask[pad:pad + num_low_freqs] = True
    return mask.astype(np.float32)


def fastmri_equispaced(num_cols, center_fraction, acceleration, offset):
    num_low_freqs = int(round(num_cols * center_fraction))
    mask = np.zeros(num_cols, dtype=np.float32)
    pad = (num_cols - num_low_freqs + 1) // 2
    mask[pad:pad + num_low_freqs] = True
    adjusted_accel = (acceleration * (num_low_freqs - num_cols)) / (num_low_freqs * acceleration - num_cols)
    mask[np.around(np.arange(offset, num_cols - 1, adjusted_accel)).astype(np.uint)] = True
    return mask, adjusted_accel


def line_masks(spec, w, seeds):
    op = build(spec, (1, 1, w), seeds=list(seeds))
    return op.mask[:, 0, 0].numpy()


# --- forward model -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [c for c in CASES if "coil" not in c["id"] and "phase" not in c["spec"]],
                         ids=lambda c: c["id"])
def test_forward_is_masked_numpy_fft(case):
    op = build(case["spec"], case["shape"], seeds=[1, 2])
    x = rand_image(op, 2)
    expected = op.mask.numpy() * np_fft2c(x.numpy().astype(np.complex128))
    y = op.A(x)
    assert y.dtype == torch.complex64 and tuple(y.shape) == (2, *case["shape"])
    assert rel(y.numpy(), expected) < 1e-6
    assert op.noise_mask() is op.mask


def test_multicoil_forward_layout_and_numpy_oracle():
    op = build("mri:accel=4,coils=3,complex=true", (2, 16, 20), seeds=[1, 2])
    x = rand_image(op, 2).numpy()
    s = op.coil_maps[0].numpy()
    y = op.A(torch.from_numpy(x)).numpy()
    assert y.shape == (2, 6, 16, 20) and op.measurement_shape() == (6, 16, 20)
    for c in range(2):
        for k in range(3):  # channel c·K + k
            assert rel(y[:, c * 3 + k], op.mask[:, 0].numpy() * np_fft2c(s[k] * x[:, c])) < 1e-6


@pytest.mark.parametrize("shape", [(6, 8), (5, 7), (4, 5)])
def test_reflection_gives_the_real_image_spectrum_projection(shape):
    g = torch.Generator().manual_seed(0)
    c = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    sym = 0.5 * (c + _reflect(c).conj())
    assert torch.allclose(sym, fft2c(ifft2c(c).real), atol=1e-6)


# --- masks against fastMRI ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w,accel,center", [(320, 4, 0.08), (368, 8, 0.04), (33, 4, 0.08), (30, 3, 0.1)])
def test_random_mask_is_fastmri_formula_on_the_same_uniforms(w, accel, center):
    masks = line_masks(f"mri:accel={accel},center={center},pattern=random", w, range(5))
    for seed, m in enumerate(masks):
        u = torch.rand(w, generator=generators([seed], "operator")[0], dtype=torch.float64).numpy()
        assert np.array_equal(m, fastmri_random(w, center, accel, u))


@pytest.mark.parametrize("w,accel,center", [(320, 4, 0.08), (320, 8, 0.04)])
def test_random_mask_statistics_match_fastmri_with_numpy_randomstate(w, accel, center):
    ours = line_masks(f"mri:accel={accel},center={center},pattern=random", w, range(400))
    theirs = np.stack([fastmri_random(w, center, accel, np.random.RandomState(s).uniform(size=w)) for s in range(400)])
    n = int(round(w * center))
    pad = (w - n + 1) // 2
    assert (ours[:, pad:pad + n] == 1).all() and (theirs[:, pad:pad + n] == 1).all()
    assert abs(ours.mean() - 1 / accel) < 0.005 and abs(theirs.mean() - 1 / accel) < 0.005
    outside = np.ones(w, bool)
    outside[pad:pad + n] = False
    prob = (w / accel - n) / (w - n)
    assert abs(ours[:, outside].mean() - prob) < 0.005  # each outer line sampled with probability prob
    assert abs(ours[:, outside].mean() - theirs[:, outside].mean()) < 0.007


@pytest.mark.parametrize("w,accel,center", [(320, 4, 0.08), (320, 8, 0.04), (31, 4, 0.1), (64, 3, 0.2)])
def test_equispaced_mask_is_fastmri_formula(w, accel, center):
    masks = line_masks(f"mri:accel={accel},center={center},pattern=equispaced", w, range(60))
    _, a = fastmri_equispaced(w, center, accel, 0)
    candidates = [fastmri_equispaced(w, center, accel, off)[0] for off in range(round(a))]
    hits = [next(i for i, c in enumerate(candidates) if np.array_equal(m, c)) for m in masks]
    assert set(hits) == set(range(round(a)))  # every offset in randint(0, round(a)) occurs
    m = candidates[0]
    lines = np.around(np.arange(0, w - 1, a)).astype(int)
    assert np.all(np.abs(np.diff(lines) - a) <= 1)  # spacing a (rounded)
    assert abs(m.mean() - 1 / accel) < (0.03 if w >= 64 else 0.06)


@pytest.mark.parametrize("preset,accel", [("mri-4x", 4), ("mri-8x", 8), ("mri-4x-equi", 4), ("mri-8x-equi", 8)])
def test_presets_sample_one_over_accel(preset, accel):
    masks = line_masks(preset, 320, range(200))
    assert abs(masks.mean() - 1 / accel) < 0.01
    assert parse(preset).family == "mri"


def test_vd2d_density_and_mask():
    op = build("mri-4x-vd2d", (1, 32, 32), seeds=list(range(200)))
    from operators.mri import vd2d_density

    p = vd2d_density(32, 32, 4, 0.08)
    assert abs(p.sum() - 32 * 32 / 4) < 1e-6 * 32 * 32
    n, pad = 3, (32 - 3 + 1) // 2  # round(32·0.08) = 3
    assert (p[pad:pad + n, pad:pad + n] == 1).all()
    assert (op.mask[:, 0, pad:pad + n, pad:pad + n] == 1).all()
    r = np.hypot(*np.meshgrid((np.arange(32) - 16) / 16, (np.arange(32) - 16) / 16))
    order = np.argsort(r[0, 16:])  # along a ray from the centre the density does not increase
    assert np.all(np.diff(p[16, 16:][order]) <= 1e-12)
    assert abs(float(op.mask.mean()) - 0.25) < 0.01
    assert tuple(op.mask.shape) == (200, 1, 32, 32)


# --- pseudo-inverses ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["mri:accel=1,pattern=random", "mri:accel=1,pattern=equispaced",
                                  "mri:accel=1,pattern=vd2d", "mri:accel=1,complex=true"])
def test_fully_sampled_single_coil_pinv_is_inverse(spec):
    op = build(spec, (2, 12, 16), seeds=[0])
    assert float(op.mask.min()) == 1
    x = rand_image(op, 1)
    assert torch.allclose(op.A_pinv(op.A(x)), x, atol=1e-5)


def _dense(op, complex_image):
    """Real matrix of A acting on the stacked real (and imaginary) parts of one image."""
    n = int(np.prod(op.image_shape))
    eye = torch.eye(n, dtype=torch.float64)
    basis = torch.cat([eye, 1j * eye]) if complex_image else eye
    y = op.A(basis.reshape(-1, *op.image_shape)).reshape(basis.shape[0], -1).numpy()
    return np.concatenate([y.real, y.imag], axis=1).T


@pytest.mark.parametrize("spec", ["mri:accel=2,center=0.25,pattern=random", "mri:accel=2,center=0.2,pattern=vd2d",
                                  "mri:accel=2,center=0.25,complex=true", "mri:accel=2,center=0.25,coils=2"])
def test_pinv_matches_dense_pseudo_inverse(spec):
    op = build(spec, (1, 6, 8), seeds=[3])
    mat = _dense(op, op.complex)
    g = torch.Generator().manual_seed(1)
    shape = (1, *op.measurement_shape())
    y = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) * op.mask
    ref = np.linalg.pinv(mat) @ np.concatenate([y.numpy().reshape(-1).real, y.numpy().reshape(-1).imag])
    got = op.A_pinv(y).numpy().reshape(-1)
    got = np.concatenate([got.real, got.imag]) if op.complex else got
    assert rel(got, ref) < (1e-3 if op.multicoil else 1e-5)
    if op.has_svd:
        assert rel(op.svd_pinv(y).numpy().reshape(-1).real, ref[:got.size // (2 if op.complex else 1)]) < 1e-5


@pytest.mark.parametrize("case", [c for c in CASES if "coil" not in c["id"] and "phase" not in c["spec"]],
                         ids=lambda c: c["id"])
def test_single_coil_svd_pieces(case):
    # the generic SVD test selects by the class attribute; MRI's has_svd is per instance (single coil only)
    op = build(case["spec"], case["shape"], seeds=[5, 6])
    assert op.has_svd
    x = rand_image(op, 2)
    s, c = op.singulars(), op.Vt(x)
    assert torch.allclose(op.V(c), x, atol=1e-5)
    assert torch.allclose(op.U(s * c), op.A(x), atol=1e-5)
    assert torch.allclose(op.Ut(op.A(x)), s * c, atol=1e-5)
    keep = (s > 0).to(c.dtype)
    p = op.V(keep * op.Vt(x))
    assert torch.allclose(op.V(keep * op.Vt(p)), p, atol=1e-5)
    y = op.A(x)
    assert torch.allclose(op.svd_pinv(y), op.A_pinv(y), atol=1e-5)
    if op.complex:
        assert torch.equal(s, op.mask.expand_as(s))


# --- multi-coil -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coils,h,w", [(8, 32, 32), (3, 17, 24)])
def test_simulated_coil_maps_are_normalised(coils, h, w):
    s = birdcage_maps(coils, h, w)
    assert tuple(s.shape) == (coils, h, w) and s.dtype == torch.complex64
    assert torch.allclose((s.abs() ** 2).sum(0), torch.ones(h, w), atol=1e-5)
    assert float((s[0] - s[1]).abs().max()) > 0.1  # coils see the image differently


@pytest.mark.parametrize("complex_image", [False, True])
def test_fully_sampled_multicoil_zero_filled_is_exact(complex_image):
    op = build(f"mri:accel=1,coils=4,complex={str(complex_image).lower()}", (2, 16, 16), seeds=[0])
    x = rand_image(op, 1)
    assert torch.allclose(op.zero_filled(op.A(x)), x, atol=1e-5)
    assert torch.allclose(op.A_pinv(op.A(x)), x, atol=1e-4)
    assert not op.has_svd


def test_coil_file(tmp_path):
    maps = birdcage_maps(3, 12, 16).numpy() * 2
    good = tmp_path / "maps.npy"
    np.save(good, maps)
    op = build(f"mri:coil_file={good}", (1, 12, 16), seeds=[0])
    assert op.multicoil and op.coils == 3 and np.allclose(op.coil_maps[0].numpy(), maps)
    x = rand_image(op, 1)
    full = build(f"mri:accel=1,coil_file={good}", (1, 12, 16), seeds=[0])
    assert torch.allclose(full.zero_filled(full.A(x)), x, atol=1e-5)  # Σ|S|² = 4 here: normalised away
    bad = {"shape": maps[:, :10], "real": maps.real, "2d": maps[0]}
    for name, arr in bad.items():
        np.save(tmp_path / f"{name}.npy", arr)
        with pytest.raises(OperatorError, match="coil map file"):
            build(f"mri:coil_file={tmp_path / name}.npy", (1, 12, 16), seeds=[0])
    with pytest.raises(OperatorError, match="coils=4"):
        build(f"mri:coils=4,coil_file={good}", (1, 12, 16), seeds=[0])
    with pytest.raises(OperatorError, match="does not exist"):
        build(f"mri:coil_file={tmp_path / 'missing.npy'}", (1, 12, 16), seeds=[0])


# --- errors ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,match", [
    ("mri:accel=0", "accel"), ("mri:center=0", "center"), ("mri:center=1.0", "center"),
    ("mri:pattern=spiral", "pattern"), ("mri:accel=8,center=0.2", "lower center"),
    ("mri:accel=8,center=0.2,pattern=equispaced", "lower center"), ("mri:accel=4,center=0.6,pattern=vd2d", "lower"),
    ("mri:coils=0", "coils"),
])
def test_errors(spec, match):
    with pytest.raises(OperatorError, match=match):
        build(spec, (1, 32, 32), seeds=[0])
