"""Measurement noise, separate from the operators: y = A(x) + n.

σ is on the **[0, 1] image scale** everywhere. The DPS/DAPS papers' "σ = 0.05" is on [-1, 1], i.e. σ = 0.025 here.
Complex measurements (MRI k-space) get independent Gaussian noise of standard deviation σ on the real and on the
imaginary part. Noise is drawn per image from that image's generator, so it does not depend on the batch, and it is
added only where the operator's ``noise_mask`` says the measurement holds data.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import Tensor

from .seeding import randn
from .spec import OperatorError


@dataclasses.dataclass(frozen=True)
class Noise:
    """``gaussian`` with standard deviation ``sigma``, ``poisson`` with ``rate`` (photons per unit intensity:
    y = Poisson(rate·A(x))/rate, as DPS's Poisson model with rate = 255·λ), or ``none``."""

    kind: str = "gaussian"
    sigma: float = 0.0
    rate: float = 0.0

    def __post_init__(self):
        if self.kind not in ("gaussian", "poisson", "none"):
            raise OperatorError(f"unknown noise '{self.kind}'; use gaussian, poisson or none.")
        if self.kind == "gaussian" and not self.sigma >= 0:
            raise OperatorError(f"the noise level must be zero or positive, got {self.sigma}.")
        if self.kind == "poisson" and not self.rate > 0:
            raise OperatorError(f"the Poisson rate must be positive, got {self.rate}.")

    @classmethod
    def parse(cls, text: "str | float | Noise | None") -> "Noise":
        """``0.025``, ``gaussian:0.025``, ``poisson:255`` or ``none``."""
        if isinstance(text, Noise):
            return text
        if text is None:
            return cls("none")
        if isinstance(text, (int, float)):
            if not text >= 0:
                raise OperatorError(f"the noise level must be zero or positive, got {text}; give a σ on the [0, 1] "
                                    f"scale such as 0.025.")
            return cls("gaussian", sigma=float(text)) if text > 0 else cls("none")
        kind, _, value = str(text).strip().partition(":")
        try:
            if kind == "none":
                return cls("none")
            if kind == "poisson":
                return cls("poisson", rate=float(value))
            if kind == "gaussian":
                return cls("gaussian", sigma=float(value or 0))
            return cls.parse(float(kind))
        except ValueError:
            raise OperatorError(
                f"cannot read the noise '{text}'; give a σ on the [0, 1] scale such as 0.025, 'poisson:255' or 'none'."
            ) from None

    def __str__(self) -> str:
        if self.kind == "none" or (self.kind == "gaussian" and self.sigma == 0):
            return "none"
        return f"gaussian:{self.sigma!r}" if self.kind == "gaussian" else f"poisson:{self.rate!r}"

    @property
    def std(self) -> float:
        """The Gaussian standard deviation that solvers use in their likelihood (0 for none)."""
        return self.sigma if self.kind == "gaussian" else 0.0

    def sample(self, y: Tensor, gens: Sequence[torch.Generator], mask: Tensor | None = None) -> Tensor:
        """A noisy copy of the clean measurement ``y`` (batch i drawn from ``gens[i]``)."""
        if len(gens) != y.shape[0]:
            raise OperatorError(f"got {len(gens)} noise generators for a batch of {y.shape[0]} measurements.")
        if self.kind == "none" or (self.kind == "gaussian" and self.sigma == 0):
            return y.clone()
        if self.kind == "gaussian":
            if y.is_complex():
                real_dtype = y.real.dtype
                n = torch.complex(randn(y.shape[1:], gens, real_dtype), randn(y.shape[1:], gens, real_dtype))
                # re-draw order: all real parts then all imaginary parts of each image from that image's stream
            else:
                n = randn(y.shape[1:], gens, y.dtype)
            n = n.to(y.device) * self.sigma
        else:
            if y.is_complex():
                raise OperatorError("Poisson noise needs a real, non-negative measurement; use Gaussian noise here.")
            if bool((y < -1e-6).any()):
                raise OperatorError("Poisson noise needs a non-negative measurement; use Gaussian noise here.")
            counts = [torch.poisson((self.rate * y[i].clamp_min(0)).detach().cpu().double(), generator=g)
                      for i, g in enumerate(gens)]
            n = (torch.stack(counts).to(y.device, y.dtype) / self.rate) - y
        if mask is not None:
            n = n * mask
        return y + n
