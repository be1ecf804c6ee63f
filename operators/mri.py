"""Cartesian MRI: y = M ⊙ F(x) (single coil) or y_k = M ⊙ F(S_k · x) (multi-coil SENSE), k-space on the full grid.

Conventions
* F = ``fft2c``, the centred orthonormal 2-D FFT over (H, W) (fastMRI's). Phase-encode lines are the **columns**
  (the width axis): a line mask is constant over the rows.
* Images (B, C, H, W): real float32 magnitude on [0, 1], or complex64 with ``complex=true``. Each channel is imaged
  separately with the same mask (and coil maps).
* Measurements: complex64 k-space with zeros where not sampled. Single coil (B, C, H, W); multi-coil
  (B, C·K, H, W) with channel index c·K + k (the K coils of image channel 0 first), so that the (B, 1, ·, ·) mask
  broadcasts against it like any 4-D measurement.
* Buffers: ``mask`` float32, (B|1, 1, 1, W) for line patterns, (B|1, 1, H, W) for vd2d, one per image seed;
  ``coil_maps`` complex64 (1, K, H, W) (multi-coil only; a saved state may hold one set per image).

Masks (n = round(W·center) with Python's round, as fastMRI; pad = (W − n + 1)//2; columns [pad, pad + n) are always
sampled; R = accel):
* ``random`` (fastMRI ``RandomMaskFunc``): prob = (W/R − n)/(W − n); column j is sampled iff u_j < prob with
  u = torch.rand(W, float64) from the image's generator. E[sampled fraction] = 1/R.
* ``equispaced`` (fastMRI's classic ``EquispacedMaskFunc``): a = R(n − W)/(nR − W); offset = randint(0, round(a));
  columns around(arange(offset, W − 1, a)) (numpy's round-half-even) plus the centre block; accel=1 samples every
  column (the formula would skip the last one).
* ``vd2d`` (ours): 2-D variable-density random points. With u = (j − W//2)/(W/2), v = (i − H//2)/(H/2) and
  r = √((u² + v²)/2) ∈ [0, 1], point (i, j) is sampled with probability p = min(1, α(1 − r)²); a central box of
  round(H·center) × round(W·center) points (same pad rule per axis) is fully sampled; α is found by bisection so that
  |box| + Σ_outside p = H·W/R exactly (E[sampled fraction] = 1/R). Draw: U < p, U = torch.rand((H, W), float64).

Linear algebra (real inner product Re⟨·,·⟩ of ``operators.base``):
* single coil: A x = M ⊙ F x; Aᴴ y = F⁻¹(M ⊙ y), real part for real images.
  For complex images AᴴA = F⁻¹ diag(M) F, so zero filling F⁻¹(M ⊙ y) is the exact pseudo-inverse. For **real**
  images AᴴA = F⁻¹ diag(D) F with D(k) = (M(k) + M(−k))/2 ∈ {0, ½, 1} (a real image's spectrum is Hermitian, so
  a column whose mirror −k is not sampled carries half the energy): A⁺ y = Re F⁻¹(sym(M ⊙ y)/D), where
  sym(c) = (c + conj c(−k))/2 = F(Re F⁻¹ c). This doubles the unpaired columns; plain zero filling
  (``zero_filled``) is A⁺ only for masks symmetric under k → −k.
* SVD (single coil): Vt = F, V = F⁻¹ (real part for real images, so V(Vt x) = x), s = √D (= M for complex images),
  Ut(y) = sym(M ⊙ y)/s, U(c) = M ⊙ sym(c)/s (1/s := 0 where s = 0); for complex images sym is the identity, so
  Ut(y) = M ⊙ y and U(c) = M ⊙ c. Then V diag(1/s) Ut = A⁺ exactly, also for real images.
* multi-coil: Aᴴ y = Σ_k conj(S_k) F⁻¹(M ⊙ y_k) (real part for real images); A⁺ = conjugate-gradient least squares
  (exact min-norm, ``LinearOperator.least_squares``); ``zero_filled(y)`` = Σ_k conj(S_k) F⁻¹ y_k / Σ_k |S_k|² is a
  quick preview (exact for R = 1). No SVD.
* Simulated coil maps (ours, birdcage-like): coils at angle θ_k = 2πk/K on a circle of radius 1.5 around the image
  (pixel centres p ∈ [−1, 1]²); S_k(p) ∝ exp(i(θ_k + (π/2)⟨p, e_k⟩)) / (1 + |p − 1.5 e_k|²), e_k = (cos θ_k, sin θ_k),
  normalised so that Σ_k |S_k|² = 1 at every pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import LinearOperator
from .registry import preset, register
from .simple import fft2c, ifft2c
from .spec import OperatorError, Param, fraction, positive


def _at_least_one(value) -> str | None:
    return None if value >= 1 else "must be 1 or more (1 = fully sampled)"


def center_block(n_total: int, center: float) -> tuple[int, int]:
    """(n, pad): the fully sampled centre lines are [pad, pad + n), n = round(N·center), pad = (N − n + 1)//2."""
    n = int(round(n_total * center))
    return n, (n_total - n + 1) // 2


def _check_center(total: int, accel: int, center: float, n: int, what: str = "lines") -> None:
    if n > total / accel:  # prob = (W/R − n)/(W − n) < 0
        raise OperatorError(
            f"the {n} fully sampled centre {what} of center={center:g} exceed the {total / accel:g} of {total} that "
            f"{accel}× acceleration allows; lower center or accel.")


def random_mask(w: int, accel: int, center: float, g: torch.Generator) -> Tensor:
    """fastMRI RandomMaskFunc columns: u < (W/R − n)/(W − n) outside the centre block. Returns (W,) float32."""
    n, pad = center_block(w, center)
    _check_center(w, accel, center, n)
    u = torch.rand(w, generator=g, dtype=torch.float64)
    prob = (w / accel - n) / (w - n) if w > n else 1.0
    m = (u < prob).float()
    m[pad:pad + n] = 1
    return m


def equispaced_mask(w: int, accel: int, center: float, g: torch.Generator) -> Tensor:
    """fastMRI (classic) EquispacedMaskFunc columns: a = R(n − W)/(nR − W), offset ~ U{0..round(a)−1},
    around(arange(offset, W − 1, a)) plus the centre block. Returns (W,) float32."""
    n, pad = center_block(w, center)
    _check_center(w, accel, center, n)
    if accel == 1:  # our choice: fully sampled (fastMRI's arange(…, W − 1, 1) would skip the last column)
        return torch.ones(w)
    m = torch.zeros(w)
    m[pad:pad + n] = 1
    if n * accel != w:  # n·R = W: the centre alone gives 1/R (a would divide by zero)
        a = accel * (n - w) / (n * accel - w)
        offset = int(torch.randint(0, round(a), (1,), generator=g))
        m[torch.from_numpy(np.around(np.arange(offset, w - 1, a)).astype(np.int64))] = 1
    return m


def vd2d_density(h: int, w: int, accel: int, center: float) -> np.ndarray:
    """Sampling probability p(i, j) = min(1, α(1 − r)²) (1 in the centre box), with E[Σ p] = H·W/R (see module doc)."""
    (nh, ph), (nw, pw) = center_block(h, center), center_block(w, center)
    _check_center(h * w, accel, center, nh * nw, "points")
    box = np.zeros((h, w), dtype=bool)
    box[ph:ph + nh, pw:pw + nw] = True
    if accel == 1:
        return np.ones((h, w))
    v = (np.arange(h) - h // 2) / (h / 2)
    u = (np.arange(w) - w // 2) / (w / 2)
    r = np.sqrt((u[None, :] ** 2 + v[:, None] ** 2) / 2)
    base = np.clip(1 - r, 0, 1) ** 2
    target = h * w / accel - box.sum()  # expected points outside the box

    def expected(alpha):
        return np.minimum(1.0, alpha * base)[~box].sum()

    lo, hi = 0.0, 1.0
    while expected(hi) < target and hi < 1e12:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected(mid) < target else (lo, mid)
    p = np.minimum(1.0, hi * base)
    p[box] = 1.0
    return p


def birdcage_maps(coils: int, h: int, w: int) -> Tensor:
    """Simulated coil maps (K, H, W) complex64 with Σ_k |S_k|² = 1 (formula in the module doc)."""
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    theta = 2 * np.pi * np.arange(coils) / coils
    ex, ey = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    dist2 = (x[None, None, :] - 1.5 * ex) ** 2 + (y[None, :, None] - 1.5 * ey) ** 2
    phase = theta[:, None, None] + 0.5 * np.pi * (x[None, None, :] * ex + y[None, :, None] * ey)
    s = np.exp(1j * phase) / (1 + dist2)
    s /= np.sqrt((np.abs(s) ** 2).sum(axis=0, keepdims=True))
    return torch.from_numpy(s.astype(np.complex64))


def load_coil_maps(path: str, coils: int, h: int, w: int) -> Tensor:
    """A complex .npy array (K, H, W) of coil maps, with clear errors."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise OperatorError(f"the coil map file '{path}' does not exist; check the path or drop coil_file to "
                            f"simulate coil maps.")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise OperatorError(f"cannot read the coil map file '{path}' ({exc}); give a .npy array of shape "
                            f"(coils, {h}, {w}).") from None
    if not np.iscomplexobj(arr):
        raise OperatorError(f"the coil map file '{path}' holds a {arr.dtype} array but coil maps must be complex; "
                            f"save a complex64 array of shape (coils, {h}, {w}).")
    if arr.ndim != 3 or arr.shape[1:] != (h, w):
        raise OperatorError(f"the coil map file '{path}' holds an array of shape {arr.shape} but the image is "
                            f"{h}×{w}; give coil maps of shape (coils, {h}, {w}).")
    if coils != 1 and arr.shape[0] != coils:
        raise OperatorError(f"the coil map file '{path}' has {arr.shape[0]} coils but the spec asks for coils={coils}; "
                            f"set coils={arr.shape[0]} or leave it at 1 to take the file's count.")
    if not np.isfinite(arr).all():
        raise OperatorError(f"the coil map file '{path}' contains NaN or infinite values; give finite coil maps.")
    return torch.from_numpy(arr.astype(np.complex64))


def _reflect(t: Tensor) -> Tensor:
    """t(−k) on the centred grid: index j → 2·(N//2) − j (mod N) on each of the last two axes."""
    h, w = t.shape[-2:]
    return torch.roll(torch.flip(t, (-2, -1)), (1 - h % 2, 1 - w % 2), (-2, -1))


@register
class MRI(LinearOperator):
    family = "mri"
    description = ("Cartesian MRI: undersampled k-space (columns: random/equispaced as fastMRI, or 2-D variable "
                   "density), single coil or multi-coil SENSE")
    params = {
        "accel": Param(int, 4, "acceleration R: about 1/R of k-space is sampled", check=_at_least_one),
        "center": Param(float, 0.08, "fraction of fully sampled central lines (vd2d: box side fraction)",
                        check=fraction),
        "pattern": Param(str, "random", "random, equispaced (fastMRI column masks) or vd2d (2-D variable density)",
                         choices=("random", "equispaced", "vd2d")),
        "coils": Param(int, 1, "number of receive coils (> 1: multi-coil SENSE with simulated maps)", check=positive),
        "coil_file": Param(str, "", "complex .npy coil maps of shape (coils, H, W) (multi-coil)"),
        "complex": Param(bool, False, "complex-valued images (complex64) instead of real magnitude images"),
        "phase": Param(bool, False, "real magnitude images of a complex object with a known phase map e^{iφ} "
                                    "(operator state 'coil_maps'): y = M ⊙ F(e^{iφ}·x), a one-coil SENSE model"),
    }
    per_image = ("mask", "coil_maps")
    #: per instance: True for single coil (set in __init__); the family as a whole (multi-coil) has none
    has_svd = False

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        _, h, w = self.image_shape
        accel, center, pattern = spec["accel"], spec["center"], spec["pattern"]
        self.complex = bool(spec["complex"])
        if pattern == "vd2d":
            p = torch.from_numpy(vd2d_density(h, w, accel, center))
            masks = [(torch.rand((h, w), generator=g, dtype=torch.float64) < p).float()[None] for g in gens]
        else:
            draw = random_mask if pattern == "random" else equispaced_mask
            masks = [draw(w, accel, center, g)[None, None] for g in gens]
        self.register_buffer("mask", torch.stack(masks))  # (B, 1, 1|H, W)
        if spec["phase"] and (self.complex or spec["coils"] > 1 or spec["coil_file"]):
            raise OperatorError("mri: phase=true is for real magnitude images with one coil; drop complex, coils "
                                "and coil_file.")
        self.multicoil = bool(spec["coil_file"]) or spec["coils"] > 1 or bool(spec["phase"])
        if self.multicoil:
            maps = (torch.ones(1, h, w, dtype=torch.complex64) if spec["phase"] else  # replaced by the saved state
                    load_coil_maps(spec["coil_file"], spec["coils"], h, w) if spec["coil_file"]
                    else birdcage_maps(spec["coils"], h, w))
            self.register_buffer("coil_maps", maps[None])  # (1, K, H, W)
        self.has_svd = not self.multicoil

    @property
    def image_dtype(self) -> torch.dtype:
        return torch.complex64 if self.complex else torch.float32

    @property
    def coils(self) -> int:
        return self.coil_maps.shape[1] if self.multicoil else 1

    def measurement_shape(self) -> tuple[int, ...]:
        c, h, w = self.image_shape
        return (c * self.coils, h, w)

    @classmethod
    def image_shape_for(cls, spec, measurement_shape):
        c, h, w = super().image_shape_for(spec, measurement_shape)
        coils = spec["coils"]
        if c % coils:
            raise OperatorError(f"the k-space has {c} channels, not a multiple of coils={coils}; set coils to the "
                                f"number of coils in the data.")
        return (c // coils, h, w)

    def noise_mask(self) -> Tensor:
        return self.mask

    def _image(self, x: Tensor) -> Tensor:
        return x if self.complex else x.real

    def _split(self, y: Tensor) -> Tensor:  # (B, C·K, H, W) -> (B, C, K, H, W)
        return y.reshape(y.shape[0], self.image_shape[0], self.coils, *y.shape[-2:])

    # ----------------------------------------------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        if not self.multicoil:
            return self.mask * fft2c(x)  # y = M ⊙ F x
        k = fft2c(x.unsqueeze(2) * self.coil_maps.unsqueeze(1)) * self.mask.unsqueeze(1)  # y_k = M ⊙ F(S_k x)
        return k.flatten(1, 2)

    def A_adjoint(self, y: Tensor) -> Tensor:
        if not self.multicoil:
            return self._image(ifft2c(self.mask * y))  # F⁻¹(M ⊙ y)
        x = ifft2c(self._split(y) * self.mask.unsqueeze(1))  # Σ_k conj(S_k) F⁻¹(M ⊙ y_k)
        return self._image((self.coil_maps.conj().unsqueeze(1) * x).sum(2))

    def A_pinv(self, y: Tensor) -> Tensor:
        if self.multicoil:
            return self.least_squares(y)
        if self.complex:
            return ifft2c(self.mask * y)  # zero filling: exact A⁺ for complex images
        d = self._gram()  # real images: A⁺y = Re F⁻¹(sym(M ⊙ y)/D)
        return ifft2c(self._sym(self.mask * y) * torch.where(d > 0, 1 / d.clamp_min(1e-12), 0)).real

    def zero_filled(self, y: Tensor) -> Tensor:
        """Quick preview: F⁻¹ y (single coil), Σ_k conj(S_k) F⁻¹ y_k / Σ_k |S_k|² (multi-coil); real part for real
        images."""
        if not self.multicoil:
            return self._image(ifft2c(y))
        s = self.coil_maps.unsqueeze(1)
        x = (s.conj() * ifft2c(self._split(y))).sum(2)
        ss = (s.abs() ** 2).sum(2)
        return self._image(x * torch.where(ss > 0, 1 / ss.clamp_min(1e-12), 0))

    # ----------------------------------------------------------------------------------------------------------------
    # SVD (single coil): Vt = F, V = F⁻¹ (Re for real images), s = √D, Ut(y) = sym(M⊙y)/s, U(c) = M ⊙ sym(c)/s
    def _sym(self, c: Tensor) -> Tensor:
        """Projection onto spectra of real images, (c + conj c(−k))/2 = F(Re F⁻¹ c); identity for complex images."""
        return c if self.complex else 0.5 * (c + _reflect(c).conj())

    def _gram(self) -> Tensor:
        """D with AᴴA = F⁻¹ diag(D) F: M for complex images, (M(k) + M(−k))/2 for real ones."""
        return self.mask if self.complex else 0.5 * (self.mask + _reflect(self.mask))

    def _inv_s(self) -> Tensor:
        s = self.singulars()
        return torch.where(s > 0, 1 / s.clamp_min(1e-12), 0)

    def _no_svd(self):
        if self.multicoil:
            raise NotImplementedError("multi-coil MRI has no SVD; use A_pinv (conjugate gradients)")

    def Vt(self, x: Tensor) -> Tensor:
        self._no_svd()
        return fft2c(x)

    def V(self, c: Tensor) -> Tensor:
        self._no_svd()
        return self._image(ifft2c(c))

    def Ut(self, y: Tensor) -> Tensor:
        return self._sym(self.mask * y) * self._inv_s()

    def U(self, c: Tensor) -> Tensor:
        return self.mask * self._sym(c) * self._inv_s()

    def singulars(self) -> Tensor:
        self._no_svd()
        c, h, w = self.image_shape
        return self._gram().sqrt().expand(-1, c, h, w)


def lowres_phase(y: Tensor, spec) -> Tensor:
    """e^{iφ} of the low-resolution image from the always-sampled centre of k-space (the centre columns; the centre
    box for vd2d), (B, C, H, W) complex64 of unit modulus (1 where the low-resolution image is 0). Single-coil
    k-space y (B, C, H, W). The phase of an MR image is smooth, so this is the usual estimate for solving for the
    magnitude of a complex image (as in homodyne / phase-corrected reconstruction)."""
    h, w = y.shape[-2:]
    centre = torch.zeros(h, w, device=y.device)
    n, pad = center_block(w, spec["center"])
    if spec["pattern"] == "vd2d":
        m, top = center_block(h, spec["center"])
        centre[top:top + m, pad:pad + n] = 1
    else:
        centre[:, pad:pad + n] = 1
    z = ifft2c(y * centre)
    mag = z.abs()
    return torch.where(mag > 1e-12 * mag.amax().clamp_min(1e-30), z / mag.clamp_min(1e-30),
                       torch.ones((), dtype=z.dtype, device=z.device)).to(torch.complex64)


def is_hermitian(y: Tensor, mask: Tensor, rtol: float = 1e-3) -> bool:
    """Whether k-space y is that of a real image: y(k) = conj y(−k) wherever both k and −k are sampled."""
    both = (mask * _reflect(mask)).expand_as(y) > 0
    if not bool(both.any()):
        return False
    diff = (y - _reflect(y).conj())[both].abs().norm()
    return bool(diff <= rtol * y[both].abs().norm().clamp_min(1e-30))


preset("mri-4x", "mri:accel=4,center=0.08,pattern=random", "single-coil MRI, 4× random columns, 8% centre (fastMRI)")
preset("mri-8x", "mri:accel=8,center=0.04,pattern=random", "single-coil MRI, 8× random columns, 4% centre (fastMRI)")
preset("mri-4x-equi", "mri:accel=4,center=0.08,pattern=equispaced",
       "single-coil MRI, 4× equispaced columns, 8% centre (fastMRI)")
preset("mri-8x-equi", "mri:accel=8,center=0.04,pattern=equispaced",
       "single-coil MRI, 8× equispaced columns, 4% centre (fastMRI)")
preset("mri-4x-vd2d", "mri:accel=4,center=0.08,pattern=vd2d", "single-coil MRI, 4× 2-D variable-density points")
preset("mri-4x-8coil", "mri:accel=4,center=0.08,pattern=random,coils=8",
       "8-coil SENSE MRI (simulated birdcage maps), 4× random columns, 8% centre")
