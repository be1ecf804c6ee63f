"""Parallel-beam CT: y = R_θ x, the Radon transform sampled at ``views`` angles, with the geometry of
``skimage.transform.radon`` and filtered back-projection (FBP) as ``skimage.transform.iradon``.

Geometry (skimage's, reproduced exactly). The image is N×N (square only), rotation centre at pixel (c, c), c = N//2
(row, column indices, pixel centres at integers). Angles θ_v = range·v/views degrees, v = 0..views−1 (skimage's
``np.linspace(0, range, views, endpoint=False)``; range < 180 is limited-angle CT). Detector bin j ∈ [0, M) sits at
s = j − M//2 and the ray integral is a sum over M samples u = k − M//2 (unit spacing) of the bilinearly interpolated
image (zero outside it) at

    column = c + cosθ·s + sinθ·u,     row = c − sinθ·s + cosθ·u        (so s = cosθ·(col − c) − sinθ·(row − c)).

``circle=false`` (the default): M = ⌈√2·N⌉ detector bins and the whole square is projected (skimage pads the image to
M×M about the same centre, which is what the sum above does); A, Aᵀ and FBP are as exact as with circle=true
(``tests/test_ct.py``). ``circle=true`` (skimage's default) takes the image as zero outside the inscribed circle of
radius N//2, M = N, and FBP zeroes everything there: content outside it (a CT scanner's table, a photograph's corners)
is only partly seen by the rays and then removed. On the 10 held-out slices of ``../shared/data/test/ct_dicom``
(128², σ = 0.025, 60 views) FBP scores 19.2 and 23.7 dB with circle=true on the two slices with the most table
outside the circle, 30.1 and 30.0 dB with circle=false, and 29.6 against 31.4 dB on average over the 10 (90
views: 30.3 against 33.1; 30 views: 26.1 against 25.9, where the square's FBP puts streaks in corners that are
empty on most slices);
``measure`` warns (``OutsideCircleWarning``) when a circle=true operator is given a clean image with more than
``OUTSIDE_TOLERANCE`` of its intensity outside the circle (``content_outside_circle``).

Measurement layout: (B, C, views, M) — one row per view, one column per detector bin, channels independent;
skimage's sinogram is the transpose (M, views).

A is ``grid_sample`` of the image at all views' sampling positions followed by the sum over u (views are the
sampler's batch dimension, split into as many groups as torch has threads because the CPU kernel parallelises over
the batch only; chunked to bound memory), differentiable by autograd. Aᵀ is its exact adjoint: the vector–Jacobian
product of that sampler (a bilinear splat, ``grid_sampler_2d_backward``; on CUDA it adds with atomics, so Aᵀ is
exact but not bit-reproducible there) wrapped in an autograd Function whose own backward is A, so Aᵀ is
differentiable too. A⁺ is FBP, the classical approximate pseudo-inverse (exact only in the continuous, fully-sampled
limit); ``least_squares`` (CG on AᵀA) remains for the minimum-norm solution.

The sampling positions are built on first use per device and dtype and cached outside ``state_dict``: V·M²·2 floats
for A (94 MB at 256², 180 views; 190 MB with circle=false) and V·pixels·2 for FBP (74 MB, only pixels inside the
circle with circle=true).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LinearOperator
from .registry import preset, register
from .spec import OperatorError, Param, positive

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
MAX_ELEMENTS = 2**25  # bound on the sampler's intermediate (views-chunk × images × M × M values) on a GPU
CPU_CHUNK = 2**22  # on the CPU: chunks of ≤ 16 MB stay near the cache, yet few parallel regions per call


def fourier_filter(size: int, name: str) -> np.ndarray:
    """The FBP filter on the ``size`` (even) FFT bins, as skimage's ``_get_fourier_filter``.

    Ramp built in the spatial domain (Kak & Slaney ch. 3 eq. 61), which removes the DC bias of a sampled |ω|:
    h[0] = 1/4, h[n] = −1/(πn)² for odd n, 0 for even n ≠ 0 (n the circular distance to 0), H = 2·Re FFT(h).
    Windows on f = fftfreq(size) ∈ [−½, ½): shepp-logan sinc(f) = sin(πf)/(πf), cosine cos(πf), hamming/hann the
    NumPy windows of length ``size`` shifted so that their peak is at f = 0."""
    n = np.arange(size)
    n = np.minimum(n, size - n)
    h = np.where(n % 2 == 1, -1.0 / (np.pi * np.maximum(n, 1)) ** 2, 0.0)
    h[0] = 0.25
    H = 2.0 * np.real(np.fft.fft(h))
    f = np.fft.fftfreq(size)
    if name == "shepp-logan":
        H *= np.sinc(f)
    elif name == "cosine":
        H *= np.cos(np.pi * f)
    elif name in ("hamming", "hann"):
        H *= np.fft.fftshift(np.hamming(size) if name == "hamming" else np.hanning(size))
    elif name != "ramp":
        raise ValueError(name)
    return H


#: share of an image's intensity outside the inscribed circle above which ``measure`` warns for circle=true. On the 10
#: held-out CT slices (128²) the slices where circle=true costs FBP 1.1–11 dB at 60 views have 0.46–12%, those where
#: it costs nothing have at most 0.14% (the body touching the circle's edge)
OUTSIDE_TOLERANCE = 2e-3


class OutsideCircleWarning(UserWarning):
    """A circle=true CT operator measured an image with content outside the inscribed circle (which it loses)."""


def outside_circle_mask(n: int) -> Tensor:
    """(n, n) bool: the pixels that circle=true treats as outside the reconstruction circle (centre distance > n//2
    from (n//2, n//2), the pixels FBP zeroes)."""
    r = torch.arange(n) - n // 2
    return r[:, None] ** 2 + r[None, :] ** 2 > (n // 2) ** 2


def content_outside_circle(x) -> float:
    """The share of an image's intensity (Σ|x|, on the [0, 1] scale) that lies outside the inscribed circle of
    radius N//2, i.e. what a circle=true CT operator cannot represent; the largest over the images (and channels)
    of a batch. ``x``: a square (H, W), (C, H, W) or (B, C, H, W) tensor or array. 0 for an all-zero image.
    Above ``OUTSIDE_TOLERANCE`` use circle=false (the default)."""
    t = torch.as_tensor(x).detach()
    if t.dim() < 2 or t.shape[-1] != t.shape[-2]:
        raise OperatorError(f"content_outside_circle needs square images, got shape {tuple(t.shape)}.")
    t = t.abs().double().reshape(-1, t.shape[-2], t.shape[-1])
    total = t.sum(dim=(1, 2))
    outside = t[:, outside_circle_mask(t.shape[-1]).to(t.device)].sum(dim=1)
    share = torch.where(total > 0, outside / total.clamp_min(1e-300), torch.zeros_like(total))
    return float(share.max()) if share.numel() else 0.0


def _range_check(value) -> str | None:
    return None if 0 < value <= 360 else "must lie in (0, 360] degrees"


@register
class CT(LinearOperator):
    family = "ct"
    description = "parallel-beam CT: Radon transform at `views` angles over [0, range) degrees (skimage geometry); " \
                  "A⁺ = filtered back-projection"
    params = {
        "views": Param(int, 180, "number of projection angles", check=positive),
        "range": Param(float, 180.0, "angular range in degrees; views evenly over [0, range) (< 180: limited angle)",
                       check=_range_check),
        "filter": Param(str, "ramp", "FBP filter: " + ", ".join(FILTERS), choices=FILTERS),
        "circle": Param(bool, False, "false: whole square, ⌈√2·N⌉ detector bins; true: image taken as zero outside "
                                     "the inscribed circle (skimage's default), N bins — content there is lost"),
    }

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        _, h, w = self.image_shape
        if h != w:
            raise OperatorError(f"CT needs square images; crop or pad to N×N (got {h}×{w}).")
        if h < 2:
            raise OperatorError(f"CT needs images of at least 2×2 pixels (got {h}×{w}).")
        n = self.n = h
        self.circle = spec["circle"]
        #: the number of projections: ‖AᵀA‖ grows in proportion (each view adds ≈ the same gain, ≈ 124 at 128² with
        #: circle=false), which solvers that weigh the data by the operator's gain need to know (RED-Diff)
        self.views = int(spec["views"])
        self.n_sq = int(math.ceil(math.sqrt(2) * n))  # detector length of the whole square (skimage's diagonal)
        self.n_det = n if self.circle else self.n_sq
        theta = np.deg2rad(np.linspace(0.0, spec["range"], spec["views"], endpoint=False))
        self.register_buffer("angles", torch.from_numpy(theta), persistent=False)  # radians, float64
        # FBP: zero-pad the (square) sinogram to P = max(64, next power of two ≥ 2·n_sq) bins; Re(ifft(FFT·H)) =
        # irfft(rfft·H_even) with H_even[k] = (H[k] + H[−k])/2 (hamming/hann are not exactly even on the FFT grid)
        self.n_fft = max(64, 2 ** int(math.ceil(math.log2(2 * self.n_sq))))
        H = fourier_filter(self.n_fft, spec["filter"])
        H = 0.5 * (H + np.roll(H[::-1], 1))
        self.register_buffer("ramp", torch.from_numpy(H[: self.n_fft // 2 + 1]).float(), persistent=False)
        self._grids: dict = {}

    # ----------------------------------------------------------------------------------------------------------------
    # geometry, built once per (device, dtype) and cached (not part of state_dict)
    def _grid(self, kind: str, like: Tensor) -> Tensor:
        key = (kind, like.device, like.dtype)
        if key not in self._grids:
            made = {"radon": self._radon_grid, "fbp": self._fbp_grid, "pixels": self._pixels}[kind]()
            self._grids[key] = made.to(like.device, like.dtype if made.is_floating_point() else made.dtype)
        return self._grids[key]

    def _radon_grid(self) -> Tensor:
        """(V, M_u, M_s, 2) sampling positions in grid_sample's normalised units (align_corners: −1, +1 = the
        centres of the first and last pixels, x = column first)."""
        n, m = self.n, self.n_det
        cos, sin = self.angles.cpu().cos()[:, None, None], self.angles.cpu().sin()[:, None, None]
        s = (torch.arange(m, dtype=torch.float64) - m // 2)[None, None, :]
        u = (torch.arange(m, dtype=torch.float64) - m // 2)[None, :, None]
        col, row = n // 2 + cos * s + sin * u, n // 2 - sin * s + cos * u
        return torch.stack([col, row], dim=-1).mul_(2.0 / (n - 1)).sub_(1.0).float()

    def _pixels(self) -> Tensor:
        """Flat indices of the pixels FBP reconstructs: all, or with circle=true those inside the circle of radius
        N//2 about (c, c) (skimage zeroes the rest)."""
        inside = ~outside_circle_mask(self.n) | (not self.circle)
        return inside.reshape(-1).nonzero()[:, 0]

    def _fbp_grid(self) -> Tensor:
        """(V, 1, pixels, 2): detector position p = t + n_sq//2 of each pixel per view, t = (col − c)cosθ −
        (row − c)sinθ, as a position on a 1-row image of n_sq bins; outside [0, n_sq − 1] sent far off (np.interp's
        zero)."""
        n, d, pix = self.n, self.n_sq, self._pixels()
        row, col = (pix // n - n // 2).double(), (pix % n - n // 2).double()
        cos, sin = self.angles.cpu().cos()[:, None, None], self.angles.cpu().sin()[:, None, None]
        p = col * cos - row * sin + d // 2
        gx = torch.where((p >= 0) & (p <= d - 1), p * (2.0 / (d - 1)) - 1.0, torch.full_like(p, -10.0))
        return torch.stack([gx, torch.zeros_like(gx)], dim=-1).float()

    def check_image(self, x: Tensor) -> None:
        """Shape checks, and with circle=true a warning when the (clean) image has content outside the circle:
        ``measure`` calls this once on the images it measures (solvers never do)."""
        super().check_image(x)
        if self.circle:
            share = content_outside_circle(x)
            if share > OUTSIDE_TOLERANCE:
                warnings.warn(f"{100 * share:.1f}% of the image's intensity lies outside the inscribed circle, which "
                              f"the CT operator with circle=true takes as zero (lost in the measurement and in "
                              f"FBP); use circle=false (the default) to project the whole square.",
                              OutsideCircleWarning, stacklevel=3)

    @classmethod
    def image_shape_for(cls, spec, measurement_shape):
        c, views, m = super().image_shape_for(spec, measurement_shape)
        if views != spec["views"]:
            raise OperatorError(f"the sinogram has {views} views but the operator '{spec}' has {spec['views']}; "
                                f"set views={views} in the spec (rows are views, columns detector bins).")
        if spec["circle"]:
            return (c, m, m)
        n = int(m / math.sqrt(2))
        for candidate in (n - 1, n, n + 1, n + 2):
            if candidate > 0 and int(math.ceil(math.sqrt(2) * candidate)) == m:
                return (c, candidate, candidate)
        raise OperatorError(f"no square image gives {m} detector bins with circle=false; check the sinogram or use "
                            f"circle=true.")

    def measurement_shape(self) -> tuple[int, ...]:
        return (self.image_shape[0], len(self.angles), self.n_det)

    def _plan(self, images: int, per_view: int, like: Tensor):
        """Chunks (v0, v1, groups) of views. A chunk of k views is sampled as ``groups`` batch entries of k/groups
        views each: the CPU sampler parallelises over the batch only (groups = threads) and its adjoint scatters into
        one image per batch entry, so few groups keep that cheap; small chunks keep the intermediates in cache."""
        views = len(self.angles)
        cuda = like.device.type != "cpu"
        groups = 1 if cuda else max(1, torch.get_num_threads())
        budget = MAX_ELEMENTS if cuda else CPU_CHUNK
        k = max(groups, budget // max(1, images * per_view) // groups * groups)
        plan = []
        for v0 in range(0, views, k):
            v1 = min(v0 + k, views)
            plan.append((v0, v1, groups if (v1 - v0) % groups == 0 else 1))
        return plan

    # ----------------------------------------------------------------------------------------------------------------
    # y[b, c, v, j] = Σ_k x_bilinear(row(v, j, k), col(v, j, k))
    def A(self, x: Tensor) -> Tensor:
        b, c, n, _ = x.shape
        bc, m, grid = b * c, self.n_det, self._grid("radon", x)
        flat = x.reshape(1, bc, n, n)
        out = []
        for v0, v1, g in self._plan(bc, m * m, x):
            k = v1 - v0
            rotated = F.grid_sample(flat.expand(g, -1, -1, -1), grid[v0:v1].reshape(g, k // g * m, m, 2),
                                    mode="bilinear", padding_mode="zeros", align_corners=True)  # (g, BC, k/g·M_u, M_s)
            out.append(rotated.reshape(g, bc, k // g, m, m).sum(dim=3).transpose(0, 1).reshape(bc, k, m))
        return torch.cat(out, dim=1).reshape(b, c, len(self.angles), m)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return _Adjoint.apply(y, self)

    def _adjoint(self, y: Tensor) -> Tensor:
        """Aᵀy: each y[v, j] spread along its ray with the bilinear weights of A (the sampler's exact VJP)."""
        b, c, views, m = y.shape
        bc, n, grid = b * c, self.n, self._grid("radon", y)
        flat = y.reshape(bc, views, m)
        x = y.new_zeros(bc, n, n)
        for v0, v1, g in self._plan(bc, m * m, y):
            k = v1 - v0
            # ∂(Σ_u rotated)/∂rotated: y copied along u, laid out as A's sampler output (g, BC, k/g·M_u, M_s)
            grad_out = (flat[:, v0:v1].reshape(bc, g, k // g, 1, m).transpose(0, 1)
                        .expand(g, bc, k // g, m, m).reshape(g, bc, k // g * m, m))
            dummy = y.new_zeros(1, 1, 1, 1).expand(g, bc, n, n)  # the sampler's input (values unused)
            grad_in, _ = torch.ops.aten.grid_sampler_2d_backward(
                grad_out, dummy, grid[v0:v1].reshape(g, k // g * m, m, 2), 0, 0, True, [True, False])
            x += grad_in.sum(dim=0)
        return x.reshape(b, c, n, n)

    # ----------------------------------------------------------------------------------------------------------------
    def fbp(self, y: Tensor) -> Tensor:
        """Filtered back-projection as skimage's iradon (linear interpolation, output N×N):

            q_v = ifft(FFT(pad(y_v)) · H)[:n_sq],   x(row, col) = π/(2·views) · Σ_v q_v(t_v(row, col)),
            t_v = (col − c)cosθ_v − (row − c)sinθ_v  (q linear between bins, 0 beyond the first/last bin),

        with circle=true the N-bin sinogram is first centred in n_sq = ⌈√2·N⌉ bins and the result is zeroed
        outside the inscribed circle (radius N//2). The π/(2·views) weight is skimage's for any theta, so a
        limited-angle FBP keeps the mean intensity rather than weighting by the covered range."""
        b, c, views, m = y.shape
        n, d, p = self.n, self.n_sq, self.n_fft
        before = d // 2 - m // 2 if self.circle else 0  # _sinogram_circle_to_square
        padded = F.pad(y.reshape(b * c, views, m), (before, p - m - before))
        q = torch.fft.irfft(torch.fft.rfft(padded, dim=-1) * self.ramp.to(y.dtype), n=p, dim=-1)[..., :d]
        q = q.transpose(0, 1).unsqueeze(2)  # (V, BC, 1, n_sq): one 1-row image per view
        grid, pixels = self._grid("fbp", y), self._grid("pixels", y)
        x = y.new_zeros(b * c, len(pixels))
        for v0, v1, _ in self._plan(b * c, len(pixels), y):
            x = x + F.grid_sample(q[v0:v1], grid[v0:v1], mode="bilinear", padding_mode="zeros",
                                  align_corners=True).sum(dim=0)[:, 0]
        if len(pixels) < n * n:  # circle: zero outside the reconstruction circle
            x = y.new_zeros(b * c, n * n).index_copy(1, pixels, x)
        return x.reshape(b, c, n, n) * (math.pi / (2 * views))

    def A_pinv(self, y: Tensor) -> Tensor:
        """FBP, the classical approximate pseudo-inverse (use ``least_squares`` for the minimum-norm solution)."""
        return self.fbp(y)


class _Adjoint(torch.autograd.Function):
    """Aᵀ as an autograd Function: its derivative is A (Aᵀ is linear, (Aᵀ)ᵀ = A)."""

    @staticmethod
    def forward(ctx, y, op):
        ctx.op = op
        return op._adjoint(y)

    @staticmethod
    def backward(ctx, grad):
        return ctx.op.A(grad), None


preset("ct-full", "ct:views=180", "parallel-beam CT, 180 views over 180° (skimage geometry), FBP as A⁺")
preset("ct-sparse60", "ct:views=60", "sparse-view CT, 60 views over 180°")
preset("ct-sparse30", "ct:views=30", "sparse-view CT, 30 views over 180°")
preset("ct-limited120", "ct:views=120,range=120", "limited-angle CT, 120 views over [0°, 120°)")
