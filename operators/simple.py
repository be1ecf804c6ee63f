"""Denoising (A = I) and the DAPS paper's nonlinear tasks: phase retrieval and HDR clipping.

All act on [0, 1] images. DAPS applies phase retrieval to [0, 1] data (x·0.5 + 0.5 first), as here; DPS and
RED-Diff apply it to [-1, 1] data. DAPS's HDR task clip(2x, −1, 1) on [-1, 1] is clip(2(x − ½) + ½, 0, 1) on [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LinearOperator, Operator
from .registry import preset, register
from .spec import OperatorError, Param, positive


@register
class Denoise(LinearOperator):
    family = "denoise"
    description = "denoising: A = I (judge a prior as a denoiser)"
    params: dict = {}
    has_svd = True

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        self.register_buffer("ones", torch.ones((1, *image_shape)))

    def A(self, x):
        return x

    def A_adjoint(self, y):
        return y

    def A_pinv(self, y):
        return y

    def Vt(self, x):
        return x

    def V(self, c):
        return c

    def Ut(self, y):
        return y

    def U(self, c):
        return c

    def singulars(self):
        return self.ones


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two dimensions (fastMRI's fft2c)."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k: Tensor) -> Tensor:
    """Inverse of ``fft2c``."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


@register
class PhaseRetrieval(Operator):
    family = "phase"
    description = "phase retrieval: |FFT| of the image zero-padded by oversample/8 of its size on each side (DPS/DAPS)"
    params = {"oversample": Param(float, 2.0, "oversampling factor: pad = int(oversample/8·size) per side",
                                  check=positive)}

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        _, h, w = image_shape
        self.pad_h = int(spec["oversample"] / 8 * h)
        self.pad_w = int(spec["oversample"] / 8 * w)

    @classmethod
    def image_shape_for(cls, spec, measurement_shape):
        c, hp, wp = Operator.image_shape_for.__func__(cls, spec, measurement_shape)

        def unpadded(n_padded: int) -> int:
            for n in range(max(1, int(n_padded / (1 + spec["oversample"] / 4)) - 2), n_padded + 1):
                if n + 2 * int(spec["oversample"] / 8 * n) == n_padded:
                    return n
            raise OperatorError(f"no image size pads to {n_padded} with oversample={spec['oversample']}; check the "
                                f"measurement or the oversample parameter.")

        return (c, unpadded(hp), unpadded(wp))

    def A(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (self.pad_w, self.pad_w, self.pad_h, self.pad_h))
        return fft2c(padded).abs()

    def A_pinv(self, y: Tensor) -> Tensor:
        raise OperatorError("phase retrieval has no pseudo-inverse (the phase is lost); use a diffusion solver.")


@register
class HDR(Operator):
    family = "hdr"
    description = "high dynamic range: y = clip(scale·(x − ½) + ½, 0, 1) (DAPS's clip(2x, −1, 1) on [-1, 1])"
    params = {"scale": Param(float, 2.0, "contrast gain before clipping", check=positive)}

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        self.scale = spec["scale"]

    def A(self, x: Tensor) -> Tensor:
        return (self.scale * (x - 0.5) + 0.5).clamp(0.0, 1.0)

    def A_pinv(self, y: Tensor) -> Tensor:
        """Exact on unclipped pixels; clipped pixels map to the nearest value consistent with y."""
        return (y - 0.5) / self.scale + 0.5


preset("denoise", "denoise", "denoising (identity operator; give the noise with --noise)")
preset("phase-retrieval", "phase:oversample=2.0", "phase retrieval with 2× oversampling (DPS, DAPS)")
preset("hdr", "hdr:scale=2.0", "HDR reconstruction, factor 2 (DAPS)")
