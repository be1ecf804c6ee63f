"""Super-resolution: y = A x, the image downsampled by an integer ``factor``.

Kernels
* ``bicubic``: the MATLAB-style antialiased ``imresize`` that DPS and DAPS use as ``Resizer`` (Assaf Shocher's port):
  Keys cubic with a = −0.5 stretched by the factor (4·factor taps), weights normalised to sum 1, MATLAB's symmetric
  boundary (mirror with the edge pixel repeated). Away from the boundary it equals PIL's / torch's antialiased bicubic.
* ``average``: r×r block averaging (DDNM and RED-diff ``sr_averagepooling``).

Both are separable, A x = W_h x W_wᵀ with 1-D matrices W (out×in) built once in float64, so everything is exact:
Aᴴ y = W_hᵀ y W_w; the SVD is the Kronecker product of the 1-D SVDs, W = U diag(s) Vᵀ; and since both W have full
row rank, A⁺ y = W_h⁺ y W_w⁺ᵀ is the exact Moore–Penrose pseudo-inverse (A⁺ = W_h⁺ ⊗ W_w⁺; for ``average`` it is
pixel replication). The helpers ``sep``, ``svd_1d`` and ``kron_*`` are shared with the separable blurs in blur.py.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LinearOperator
from .registry import preset, register
from .spec import OperatorError, Param, positive


# ---------------------------------------------------------------------------------------------------------------------
# separable operators  A x = M_h · x · M_wᵀ  (matrices act on the last two dimensions and may carry batch dimensions)
def sep(mh: Tensor, x: Tensor, mw: Tensor) -> Tensor:
    """M_h · x · M_wᵀ over the last two dimensions (matrices cast to x's dtype)."""
    return mh.to(x.dtype) @ x @ mw.to(x.dtype).transpose(-1, -2)


def svd_1d(m: np.ndarray) -> dict[str, Tensor]:
    """Full float64 SVD m = u diag(s) vt of an out×in matrix (out ≤ in), s zero-padded to length in and set to exactly
    0 below the numerical rank, plus the pseudo-inverse; returned as float32 tensors."""
    u, s, vt = np.linalg.svd(m)
    keep = s > s.max() * max(m.shape) * np.finfo(np.float64).eps  # numerical rank (numpy's matrix_rank threshold)
    pinv = vt[: len(s)].T @ np.diag(np.where(keep, 1 / np.where(keep, s, 1), 0)) @ u.T
    s = np.concatenate([np.where(keep, s, 0), np.zeros(m.shape[1] - len(s))])
    return {k: torch.from_numpy(v).float() for k, v in dict(m=m, u=u, s=s, vt=vt, pinv=pinv).items()}


# With W_h = U_h S_h V_hᵀ and W_w = U_w S_w V_wᵀ: A x = U_h (S_h (V_hᵀ x V_w) S_w) U_wᵀ, so the spectral coefficients
# of an image are V_hᵀ x V_w (shape H×W), the singular values s_h[i]·s_w[j], and a measurement's coefficients are
# U_hᵀ y U_w, zero-padded to H×W (the rows/columns beyond the output size have s = 0).
def kron_vt(h: dict, w: dict, x: Tensor) -> Tensor:
    return sep(h["vt"], x, w["vt"])


def kron_v(h: dict, w: dict, c: Tensor) -> Tensor:
    return sep(h["vt"].transpose(-1, -2), c, w["vt"].transpose(-1, -2))


def kron_ut(h: dict, w: dict, y: Tensor) -> Tensor:
    c = sep(h["u"].transpose(-1, -2), y, w["u"].transpose(-1, -2))
    return F.pad(c, (0, w["s"].shape[-1] - c.shape[-1], 0, h["s"].shape[-1] - c.shape[-2]))


def kron_u(h: dict, w: dict, c: Tensor) -> Tensor:
    m, n = h["u"].shape[-1], w["u"].shape[-1]
    return sep(h["u"], c[..., :m, :n], w["u"])


def kron_singulars(h: dict, w: dict, channels: int) -> Tensor:
    s = h["s"][..., :, None] * w["s"][..., None, :]  # (…, H, W)
    s = s.reshape(-1, 1, *s.shape[-2:])
    return s.expand(-1, channels, -1, -1)


# ---------------------------------------------------------------------------------------------------------------------
# 1-D downsampling matrices
def keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = −0.5: MATLAB imresize, PIL)."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                    np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))


def symmetric_index(j: np.ndarray, n: int) -> np.ndarray:
    """MATLAB 'symmetric' boundary: …, 1, 0 | 0, 1, …, n−1 | n−1, n−2, … (edge repeated), period 2n."""
    j = np.mod(j, 2 * n)
    return np.where(j < n, j, 2 * n - 1 - j)


def bicubic_matrix(n: int, f: int) -> np.ndarray:
    """The (n/f)×n matrix of MATLAB imresize(·, 1/f, 'bicubic') with antialiasing.

    Output pixel i sits at input coordinate c_i = (i + ½)·f − ½; its taps are j = ⌊c_i − 2f⌋ + 0 … 4f + 1 with
    weights w_ij ∝ K((c_i − j)/f) (the kernel stretched by f), normalised to sum 1, and j folded symmetrically."""
    c = (np.arange(n // f) + 0.5) * f - 0.5
    j = np.floor(c - 2 * f)[:, None] + np.arange(4 * f + 2)
    w = keys_cubic((c[:, None] - j) / f)
    w /= w.sum(axis=1, keepdims=True)
    m = np.zeros((n // f, n))
    np.add.at(m, (np.repeat(np.arange(n // f), j.shape[1]), symmetric_index(j, n).ravel().astype(int)), w.ravel())
    return m


def average_matrix(n: int, f: int) -> np.ndarray:
    """The (n/f)×n matrix of f-pixel block means."""
    return np.kron(np.eye(n // f), np.full((1, f), 1.0 / f))


@register
class Downsample(LinearOperator):
    family = "sr"
    description = "super-resolution: downsample by an integer factor (MATLAB-style antialiased bicubic or block mean)"
    params = {
        "factor": Param(int, 4, "downsampling factor; must divide the image height and width", check=positive),
        "kernel": Param(str, "bicubic", "bicubic (DPS/DAPS Resizer) or average (DDNM/RED-diff block mean)",
                        choices=("bicubic", "average")),
    }
    has_svd = True

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        _, h, w = self.image_shape
        f = self.factor = spec["factor"]
        if h % f or w % f:
            raise OperatorError(f"the sr factor {f} does not divide the image size {h}×{w}; use a size divisible by "
                                f"{f}.")
        make = bicubic_matrix if spec["kernel"] == "bicubic" else average_matrix
        # 1-D pieces as non-persistent buffers: they follow .to(device) but are not per-image state
        for axis, n in (("h", h), ("w", w)):
            for key, value in svd_1d(make(n, f)).items():
                self.register_buffer(f"{key}_{axis}", value, persistent=False)

    def _pieces(self, axis: str) -> dict[str, Tensor]:
        return {k: getattr(self, f"{k}_{axis}") for k in ("m", "u", "s", "vt", "pinv")}

    def measurement_shape(self):
        c, h, w = self.image_shape
        return (c, h // self.factor, w // self.factor)

    @classmethod
    def image_shape_for(cls, spec, measurement_shape):
        c, h, w = super().image_shape_for(spec, measurement_shape)
        return (c, h * spec["factor"], w * spec["factor"])

    # y = W_h x W_wᵀ ; Aᴴ y = W_hᵀ y W_w ; A⁺ y = W_h⁺ y W_w⁺ᵀ (exact: both W have full row rank)
    def A(self, x: Tensor) -> Tensor:
        return sep(self.m_h, x, self.m_w)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return sep(self.m_h.T, y, self.m_w.T)

    def A_pinv(self, y: Tensor) -> Tensor:
        return sep(self.pinv_h, y, self.pinv_w)

    def Vt(self, x):
        return kron_vt(self._pieces("h"), self._pieces("w"), x)

    def V(self, c):
        return kron_v(self._pieces("h"), self._pieces("w"), c)

    def Ut(self, y):
        return kron_ut(self._pieces("h"), self._pieces("w"), y)

    def U(self, c):
        return kron_u(self._pieces("h"), self._pieces("w"), c)

    def singulars(self):
        return kron_singulars(self._pieces("h"), self._pieces("w"), self.image_shape[0])


preset("sr2", "sr:factor=2,kernel=bicubic", "×2 super-resolution, MATLAB-style antialiased bicubic (DPS/DAPS Resizer)")
preset("sr4", "sr:factor=4,kernel=bicubic", "×4 super-resolution, antialiased bicubic, 256 → 64 (DPS/DAPS)")
preset("sr8", "sr:factor=8,kernel=bicubic", "×8 super-resolution, antialiased bicubic")
preset("sr4-avg", "sr:factor=4,kernel=average", "×4 super-resolution by 4×4 block averaging (DDNM/RED-diff sr4)")
