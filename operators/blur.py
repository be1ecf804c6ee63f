"""Deblurring: y = k ⋆ x, the cross-correlation of every channel with one 2-D kernel k (per image), as DPS/DAPS's
``Blurkernel`` (a depthwise ``Conv2d``): y[i, j] = Σ_ab k[a, b] · x̃[i + a − ⌊k_h/2⌋, j + b − ⌊k_w/2⌋].

Kernels (the buffer ``kernel``, shape (B or 1, 1, k_h, k_w), sums to 1)
* ``gaussian``: DPS's ``scipy.ndimage.gaussian_filter`` of a size×size delta with σ = ``std`` (truncated at 4σ, folded
  back by its reflect mode when the size is smaller), built in float64. Separable.
* ``uniform``: a size×size box, 1/size² (DDNM/RED-diff ``deblur_uni``: size 9). Separable.
* ``motion``: a random camera-shake trajectory with the algorithm of LeviBorodenko/motionblur ``Kernel(size,
  intensity).kernelMatrix`` (DPS/DAPS), drawn from the image's seed (see ``motion_kernel``). One per image.
* ``file``: a 2-D .npy or image file, normalised to sum 1.

Boundary x̃
* ``reflect`` (DPS): reflect padding without repeating the edge (torch ``ReflectionPad2d`` = scipy 'mirror'; pads longer
  than the image fold again). Separable kernels: y = W_h x W_wᵀ with dense 1-D reflect-correlation matrices, so the
  adjoint, the SVD (Kronecker product of the 1-D SVDs) and the pseudo-inverse are exact. Other kernels: FFT correlation
  of the reflect-padded image (a gather with one index vector per axis; ``F.pad`` computes the same map faster when the
  pads are shorter than the image) on a grid of N ≥ H + k_h − 1 (even and 5-smooth, ``fft_length``), cropped to the
  valid part, which is the exact linear correlation; the adjoint is the transpose of each step (zero-fill,
  convolution, index_add with the same index vectors). There is no cheap SVD (``has_svd`` is False), and A_pinv is
  the Tikhonov-damped least squares argmin ‖Ax − y‖² + δ‖x‖² (δ = ``damping`` = 1e-6 = rcond²: the filter factor
  s²/(s² + δ) crosses ½ where the truncated SVD of the other modes cuts) by at most ``cg_iterations`` = 200
  conjugate-gradient steps from 0. CG does not fully converge on a 61×61 kernel (256², DPS motion kernel: 5e-3
  relative error on the range of Aᴴ after 200 steps, 1.4e-2 after 100); the early stop regularises further.
* ``circular``: periodic boundary, diagonal in the Fourier basis: ŷ = conj(k̂)·x̂ with k the kernel centred (wrapped) on
  an H×W grid. SVD: Vᴴ = F (orthonormal 2-D FFT; spectral coefficients are complex), s = |k̂|, U = Fᴴ·diag(e^{−i∠k̂}).

Pseudo-inverse of the SVD modes: the truncated SVD, dropping singular values s ≤ ``rcond``·max s (rcond = 1e-3); this is
the exact pseudo-inverse of the operator truncated to its kept singular values. (The DPS Gaussian, σ = 3, on 256²: s
spans 1 … 1e-14 and 12% of the singular values are kept; the untruncated inverse would amplify noise ~1e14-fold.)
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.ndimage
import torch
from torch import Tensor

from .base import LinearOperator
from .mask import load_array_file
from .registry import preset, register
from .resize import kron_singulars, kron_u, kron_ut, kron_v, kron_vt, sep, svd_1d
from .seeding import numpy_rng
from .spec import OperatorError, Param, positive


def odd(value) -> str | None:
    return None if value > 0 and value % 2 == 1 else "must be a positive odd number"


def unit_interval(value) -> str | None:
    return None if 0 <= value <= 1 else "must lie between 0 and 1"


# ---------------------------------------------------------------------------------------------------------------------
# kernels (float64 numpy)
def gaussian_kernel_1d(size: int, std: float) -> np.ndarray:
    """The 1-D factor g of DPS's kernel: gaussian_filter(delta_{size×size}, std) = g ⊗ g, g = the 1-D filter of a delta."""
    delta = np.zeros(size)
    delta[size // 2] = 1.0
    return scipy.ndimage.gaussian_filter1d(delta, std)  # truncate = 4, mode reflect: sums to 1


def motion_kernel(size: int, intensity: float, rng) -> np.ndarray:
    """A size×size motion-blur kernel drawn from ``rng`` (anything with numpy's ``uniform``/``beta``/``triangular``)
    with the algorithm of LeviBorodenko/motionblur ``Kernel``:

    1. on a 2·size canvas of diagonal D: path length L = 0.75·D·(U(0,1) + U(0, intensity²)); steps of length
       beta(1, 30)·(1 − intensity + 0.1)·D (a step longer than L is redrawn) until their sum reaches L;
    2. angles: θ_max ~ U(0, intensity·π), jitter p ~ beta(2, 20), θ_0 ~ U(−θ_max, θ_max), then
       |θ_n| ~ triangular(0, intensity·θ_max, θ_max + 0.1) with the sign of θ_{n−1}, flipped with probability p;
    3. path = cumsum(step·e^{iθ}), centred on its mean, rotated by U(0, π), moved to the canvas centre;
    4. drawn as a white PIL line of width ⌊D/150⌋, Gaussian-blurred with radius ⌊0.01·D⌋, LANCZOS-resized to size,
       8-bit grey, normalised to sum 1.

    One deviation: the line is at least 1 pixel wide. For size < 54, ⌊D/150⌋ = 0 and PIL draws nothing, so the original
    returns 0/0 = NaN there; from size 54 on (61 in DPS/DAPS) the two are the same draw for draw."""
    from PIL import Image, ImageDraw, ImageFilter

    big = 2 * size
    diag = math.hypot(big, big)
    eps = 0.1
    while True:  # an all-black canvas (path entirely off it) cannot be normalised: draw again
        max_len = 0.75 * diag * (rng.uniform() + rng.uniform(0, intensity**2))
        steps, total = [], 0.0
        while total < max_len:
            step = rng.beta(1, 30) * (1 - intensity + eps) * diag
            if step < max_len:
                steps.append(step)
                total += step
        max_angle = rng.uniform(0, intensity * math.pi)
        jitter = rng.beta(2, 20)
        angles = [rng.uniform(-max_angle, max_angle)]
        while len(angles) < len(steps):
            angle = rng.triangular(0, intensity * max_angle, max_angle + eps)
            flip = rng.uniform() < jitter
            angles.append(angle * (-np.sign(angles[-1]) if flip else np.sign(angles[-1])))
        path = np.cumsum(np.asarray(steps) * np.exp(1j * np.asarray(angles)))
        path = (path - path.mean()) * np.exp(1j * rng.uniform(0, math.pi)) + (big + 1j * big) / 2
        canvas = Image.new("L", (big, big))  # = the original's RGB canvas converted to L (equal channels)
        ImageDraw.Draw(canvas).line([(p.real, p.imag) for p in path], fill=255, width=max(1, int(diag / 150)))
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=int(diag * 0.01)))
        k = np.asarray(canvas.resize((size, size), resample=Image.LANCZOS), dtype=np.float64)
        if k.sum() > 0:
            return k / k.sum()


# ---------------------------------------------------------------------------------------------------------------------
# reflect padding as a gather
def reflect_index(n: int, before: int, after: int) -> np.ndarray:
    """Source index of each position of an axis of length n reflect-padded by (before, after): reflection about the
    edge pixels without repeating them (…, 2, 1 | 0, 1, …, n−1 | n−2, …), periodic with period 2(n − 1)."""
    t = np.arange(-before, n + after)
    if n == 1:
        return np.zeros_like(t)
    t = np.mod(t, 2 * (n - 1))
    return np.where(t < n, t, 2 * (n - 1) - t)


def correlation_matrix(k1: np.ndarray, n: int) -> np.ndarray:
    """The n×n matrix of reflect-padded 1-D cross-correlation: (M x)[i] = Σ_j k1[j] · x[refl(i + j − ⌊len/2⌋)]."""
    m = len(k1)
    idx = reflect_index(n, m // 2, m - 1 - m // 2)
    mat = np.zeros((n, n))
    np.add.at(mat, (np.repeat(np.arange(n), m), idx[np.arange(n)[:, None] + np.arange(m)].ravel()), np.tile(k1, n))
    return mat


def fft_length(n: int) -> int:
    """The FFT grid length for a linear correlation that needs at least n samples: the smallest *even* 5-smooth
    number ≥ n. torch's real FFTs of even length run as half-length complex ones, so e.g. 128 takes 0.14 ms per
    rfft2 + irfft2 pair (3×128², one CPU thread) where the 5-smooth 125 that ``scipy.fft.next_fast_len`` picks takes
    0.33 ms (192 against 189–200: 0.26 ms against 0.44–0.61; 320 and 576 are the same choice either way)."""
    m = n
    while True:
        m = scipy.fft.next_fast_len(m, real=True)
        if m % 2 == 0:
            return m
        m += 1


def _to(obj, device):
    """Move the tensors of a (nested) dict to ``device``."""
    if isinstance(obj, dict):
        return {key: _to(value, device) for key, value in obj.items()}
    return obj.to(device) if isinstance(obj, Tensor) else obj


@register
class Blur(LinearOperator):
    family = "blur"
    description = "deblurring: correlate with a Gaussian, motion, uniform or file kernel (reflect or circular boundary)"
    params = {
        "kind": Param(str, "gaussian", "gaussian, motion, uniform or file",
                      choices=("gaussian", "motion", "uniform", "file")),
        "size": Param(int, 61, "kernel side in pixels (gaussian, motion, uniform)", check=odd),
        "std": Param(float, 3.0, "gaussian: σ in pixels", check=positive),
        "intensity": Param(float, 0.5, "motion: 0 = straight, 1 = strongly curved and shaken", check=unit_interval),
        "file": Param(str, "", "file: path of a .npy or PNG kernel (normalised to sum 1)"),
        "boundary": Param(str, "reflect", "reflect (DPS padding) or circular (periodic, FFT-diagonal)",
                          choices=("reflect", "circular")),
    }
    per_image = ("kernel",)
    has_svd = True  # per instance: False for non-separable kernels with the reflect boundary
    rcond = 1e-3  # truncated-SVD pseudo-inverse: drop s ≤ rcond · max s
    damping = 1e-6  # Tikhonov δ of the least-squares pseudo-inverse (non-separable kernels, reflect boundary)
    cg_iterations = 200

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        kind, size = spec["kind"], spec["size"]
        if kind == "gaussian":
            g = gaussian_kernel_1d(size, spec["std"])
            kernels = [np.outer(g, g)]
        elif kind == "uniform":
            kernels = [np.full((size, size), 1.0 / size**2)]
        elif kind == "motion":
            kernels = [motion_kernel(size, spec["intensity"], numpy_rng(g)) for g in gens]
        else:
            k = load_array_file(spec["file"], "blur kernel")
            if not np.isfinite(k).all() or k.sum() <= 0:
                raise OperatorError(f"the blur kernel file '{spec['file']}' must hold finite values with a positive "
                                    f"sum.")
            kernels = [k / k.sum()]
        self.register_buffer("kernel", torch.from_numpy(np.stack(kernels)[:, None]).float())
        self.mode = "circular" if spec["boundary"] == "circular" else "separable" if kind in ("gaussian", "uniform") \
            else "fft"
        self.has_svd = self.mode != "fft"
        self._cache: dict = {}

    def measurement_shape(self):
        return self.image_shape

    # ----------------------------------------------------------------------------------------------------------------
    # quantities derived from the kernel, computed in float64 on the CPU and cached until the buffer changes
    # (a new tensor after .to(), select() or a loaded state; a bumped version after an in-place copy)
    def _derived(self) -> dict:
        k = self.kernel
        try:
            version = k._version
        except RuntimeError:  # inference tensors have no version counter
            version = None
        hit = self._cache.get("derived")
        if hit is not None and hit[0] is k and hit[1] == version:
            return hit[2]
        value = _to(getattr(self, f"_make_{self.mode}")(k.detach().cpu().double()), k.device)
        self._cache = {"derived": (k, version, value)}  # a new dict: copies made by select() keep their own
        return value

    def _make_separable(self, k: Tensor) -> dict:
        # k = k_h ⊗ k_w with Σk = 1, so the marginals are the exact 1-D factors: k_h = Σ_b k[:, b], k_w = Σ_a k[a, :]
        _, h, w = self.image_shape
        pieces = {}
        for axis, n, k1 in (("h", h, k[:, 0].sum(-1)), ("w", w, k[:, 0].sum(-2))):
            svds = [svd_1d(correlation_matrix(row.numpy(), n)) for row in k1]
            pieces[axis] = {key: torch.stack([s[key] for s in svds])[:, None] for key in svds[0]}  # (Bk, 1, …)
        return pieces

    def _make_fft(self, k: Tensor) -> dict:
        # y = crop_{H×W}( F⁻¹[ conj(k̂) · F[pad(x)] ] ) on an N_h×N_w grid with N ≥ H + k_h − 1: no wrap-around
        _, h, w = self.image_shape
        kh, kw = k.shape[-2:]
        size = (fft_length(h + kh - 1), fft_length(w + kw - 1))
        pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)  # left, right, top, bottom
        return {"ih": torch.from_numpy(reflect_index(h, *pad[2:])), "iw": torch.from_numpy(reflect_index(w, *pad[:2])),
                "pad": pad if max(pad[:2]) < w and max(pad[2:]) < h else None,
                "size": size, "khat": torch.fft.rfft2(k, s=size).to(torch.complex64)}

    def _make_circular(self, k: Tensor) -> dict:
        # the kernel wrapped onto the H×W grid with its centre (⌊k_h/2⌋, ⌊k_w/2⌋) at the origin (summing folded taps)
        _, h, w = self.image_shape
        kh, kw = k.shape[-2:]
        rows = torch.from_numpy(np.mod(np.arange(kh) - kh // 2, h))
        cols = torch.from_numpy(np.mod(np.arange(kw) - kw // 2, w))
        grid = torch.zeros(k.shape[0], 1, h, kw, dtype=k.dtype).index_add_(2, rows, k)
        grid = torch.zeros(k.shape[0], 1, h, w, dtype=k.dtype).index_add_(3, cols, grid)
        khat = torch.fft.fft2(grid)
        khat = (khat + khat.flip(-2, -1).roll((1, 1), (-2, -1)).conj()) / 2  # exactly Hermitian: k̂(−ω) = conj k̂(ω)
        s = khat.abs()
        s = torch.where(s > s.amax(dim=(-2, -1), keepdim=True) * h * w * torch.finfo(s.dtype).eps, s, 0)  # numerical 0
        phase = torch.where(s > 0, khat / s.clamp_min(1e-300), torch.ones_like(khat))
        return {"khat": khat[..., : w // 2 + 1].to(torch.complex64), "s": s.float(), "phase": phase.to(torch.complex64)}

    # ----------------------------------------------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        d = self._derived()
        if self.mode == "separable":  # y = W_h x W_wᵀ
            return sep(d["h"]["m"], x, d["w"]["m"])
        if self.mode == "circular":  # ŷ = conj(k̂) x̂
            return torch.fft.irfft2(d["khat"].conj() * torch.fft.rfft2(x), s=x.shape[-2:])
        _, h, w = self.image_shape
        if d["pad"] is not None:  # the same map as the gather below (F.pad is much faster on the CPU)
            padded = torch.nn.functional.pad(x, d["pad"], mode="reflect")
        else:  # pads at least as long as the image: reflect again
            padded = x.index_select(-2, d["ih"]).index_select(-1, d["iw"])
        return torch.fft.irfft2(d["khat"].conj() * torch.fft.rfft2(padded, s=d["size"]), s=d["size"])[..., :h, :w]

    def A_adjoint(self, y: Tensor) -> Tensor:
        d = self._derived()
        if self.mode == "separable":  # Aᴴ y = W_hᵀ y W_w
            return sep(d["h"]["m"].transpose(-1, -2), y, d["w"]["m"].transpose(-1, -2))
        if self.mode == "circular":  # x̂ = k̂ ŷ
            return torch.fft.irfft2(d["khat"] * torch.fft.rfft2(y), s=y.shape[-2:])
        # transpose of crop ∘ correlate ∘ pad: zero-fill, convolve (k̂ instead of conj k̂), index_add back the gather
        _, h, w = self.image_shape
        lh, lw = len(d["ih"]), len(d["iw"])
        z = torch.fft.irfft2(d["khat"] * torch.fft.rfft2(y, s=d["size"]), s=d["size"])[..., :lh, :lw]
        z = z.new_zeros(*z.shape[:-1], w).index_add(-1, d["iw"], z)
        return z.new_zeros(*z.shape[:-2], h, w).index_add(-2, d["ih"], z)

    def A_pinv(self, y: Tensor) -> Tensor:
        if self.mode == "separable":
            return self.svd_pinv(y, self.rcond)
        if self.mode == "circular":  # x̂ = ŷ / conj(k̂) where |k̂| > rcond · max|k̂|, else 0 (= truncated SVD)
            khat = self._derived()["khat"]
            s = khat.abs()
            keep = s > self.rcond * s.reshape(s.shape[0], -1).amax(dim=1).reshape(-1, 1, 1, 1)
            inv = torch.where(keep, 1 / torch.where(keep, khat.conj(), torch.ones_like(khat)), torch.zeros_like(khat))
            return torch.fft.irfft2(inv * torch.fft.rfft2(y), s=y.shape[-2:])
        return self.least_squares(y, damping=self.damping)

    # SVD pieces (separable and circular modes)
    def _svd(self) -> dict:
        if not self.has_svd:
            raise NotImplementedError(f"operator '{self.spec}' has no SVD (non-separable kernel, reflect boundary)")
        return self._derived()

    def Vt(self, x):
        d = self._svd()
        if self.mode == "circular":
            return torch.fft.fft2(x, norm="ortho")
        return kron_vt(d["h"], d["w"], x)

    def V(self, c):
        d = self._svd()
        if self.mode == "circular":
            return torch.fft.ifft2(c, norm="ortho").real
        return kron_v(d["h"], d["w"], c)

    def Ut(self, y):
        d = self._svd()
        if self.mode == "circular":  # Uᴴ y = e^{i∠k̂} F y, zero where s = 0
            return torch.where(d["s"] > 0, d["phase"] * torch.fft.fft2(y, norm="ortho"), 0)
        return kron_ut(d["h"], d["w"], y)

    def U(self, c):
        d = self._svd()
        if self.mode == "circular":  # U c = Fᴴ (e^{−i∠k̂} c)
            return torch.fft.ifft2(d["phase"].conj() * c, norm="ortho").real
        return kron_u(d["h"], d["w"], c)

    def singulars(self):
        d = self._svd()
        if self.mode == "circular":
            return d["s"].expand(-1, self.image_shape[0], -1, -1)
        return kron_singulars(d["h"], d["w"], self.image_shape[0])


preset("deblur-gauss", "blur:kind=gaussian,size=61,std=3.0", "Gaussian deblurring, 61×61 kernel, σ = 3, reflect "
       "boundary (DPS/DAPS)")
preset("deblur-motion", "blur:kind=motion,size=61,intensity=0.5", "motion deblurring, random 61×61 camera-shake kernel "
       "of intensity 0.5 per image (DPS/DAPS)")
preset("deblur-uniform", "blur:kind=uniform,size=9", "uniform 9×9 box deblurring (the DDNM/RED-diff "
       "deblur_uni kernel; they pad with zeros, this preset reflects)")
preset("deblur-gauss-circ", "blur:kind=gaussian,size=61,std=3.0,boundary=circular",
       "Gaussian deblurring, 61×61, σ = 3, circular boundary (exact FFT SVD)")
