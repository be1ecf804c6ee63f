"""The operator hierarchy: ``Operator`` (any differentiable y = A(x)), ``LinearOperator`` (adds the adjoint and a
pseudo-inverse) and the optional SVD pieces that DDNM-style solvers use.

Conventions (see README "Conventions"):

* images are ``(B, C, H, W)`` tensors on the **[0, 1]** scale (the physical image; solvers that work on [-1, 1]
  convert at their edge), float32 or complex64 (MRI with complex images);
* measurements are tensors of the operator's measurement shape; complex measurements are complex tensors;
* parameters that can differ per image (masks, kernels, coil maps) are buffers whose first dimension is the batch
  (size B, or 1 when shared by every image); ``select`` takes a sub-batch;
* every operator is an ``nn.Module``, so ``.to(device)`` and ``state_dict()`` carry its buffers.

Inner products are real: ⟨u, v⟩ = Re Σ conj(u)·v. For a real image and a complex measurement the adjoint is
Re(Aᴴ y), which is the adjoint for that real inner product.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .spec import OperatorError, OperatorSpec, Param


def inner(u: Tensor, v: Tensor) -> Tensor:
    """Real inner product per image: Re Σ conj(u) v over all but the batch dimension."""
    prod = u.conj() * v if (u.is_complex() or v.is_complex()) else u * v
    prod = prod.real if prod.is_complex() else prod
    return prod.reshape(prod.shape[0], -1).sum(dim=1)


class Operator(nn.Module):
    """y = A(x). Subclasses set ``family`` and ``params`` and implement ``A``.

    ``image_shape`` is the ``(C, H, W)`` the operator was built for; ``batch`` the number of images whose
    parameters it holds (1 when they are shared)."""

    family: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    description: ClassVar[str] = ""
    linear: ClassVar[bool] = False
    #: names of buffers whose first dimension is the batch (per-image parameters)
    per_image: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: OperatorSpec, image_shape: tuple[int, int, int]):
        super().__init__()
        self.spec = spec
        self.image_shape = tuple(int(s) for s in image_shape)

    # ----------------------------------------------------------------------------------------------------------------
    # to implement
    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_pinv(self, y: Tensor) -> Tensor:
        """An estimate of x from y: the exact pseudo-inverse where one exists, otherwise documented per operator."""
        raise NotImplementedError

    def measurement_shape(self) -> tuple[int, ...]:
        """Shape of one image's measurement (without the batch dimension)."""
        with torch.no_grad():
            probe = torch.zeros((1, *self.image_shape), dtype=self.image_dtype, device=self.device)
            return tuple(self.A(probe).shape[1:])

    @classmethod
    def image_shape_for(cls, spec: OperatorSpec, measurement_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The image shape whose measurement has ``measurement_shape`` (to treat a plain file as a measurement).
        Default: the same shape (masks, blurs, denoising, HDR)."""
        if len(measurement_shape) != 3:
            raise OperatorError(f"operator '{spec.family}' expects a (channels, height, width) measurement, got "
                                f"shape {tuple(measurement_shape)}.")
        return tuple(int(s) for s in measurement_shape)

    # ----------------------------------------------------------------------------------------------------------------
    # shared behaviour
    @property
    def image_dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def batch(self) -> int:
        sizes = {getattr(self, name).shape[0] for name in self.per_image if getattr(self, name, None) is not None}
        return max(sizes) if sizes else 1

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def noise_mask(self) -> Tensor | None:
        """Where the measurement holds data (1) or structural zeros (0); noise is added only where it holds data.
        ``None`` means everywhere."""
        return None

    def check_image(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise OperatorError(
                f"operator '{self.spec.family}' was built for images of shape {_shape(self.image_shape)} but got "
                f"{_shape(tuple(x.shape[1:])) if x.dim() == 4 else tuple(x.shape)}; build it for this image size."
            )
        self._check_batch(x.shape[0])

    def check_measurement(self, y: Tensor) -> None:
        expected = self.measurement_shape()
        if y.dim() != len(expected) + 1 or tuple(y.shape[1:]) != expected:
            raise OperatorError(
                f"the measurement has shape {tuple(y.shape[1:])} but operator '{self.spec}' produces {expected}; "
                f"rebuild the operator for the image size the measurement came from."
            )
        self._check_batch(y.shape[0])

    def _check_batch(self, n: int) -> None:
        if self.batch not in (1, n):
            raise OperatorError(
                f"operator '{self.spec.family}' holds parameters for {self.batch} images but got a batch of {n}; "
                f"build it with one seed per image or use select()."
            )

    def select(self, index) -> "Operator":
        """The same operator restricted to images ``index`` of the batch (per-image buffers are indexed)."""
        import copy

        sub = copy.copy(self)
        sub._buffers = dict(self._buffers)
        sub._modules = dict(self._modules)
        if isinstance(index, int):
            index = [index]
        index = torch.as_tensor(index, dtype=torch.long)
        for name in self.per_image:
            buf = self._buffers.get(name)
            if buf is not None and buf.shape[0] > 1:
                sub._buffers[name] = buf.index_select(0, index.to(buf.device))
        return sub

    def extra_repr(self) -> str:
        return f"{self.spec}, image_shape={self.image_shape}, batch={self.batch}"

    def __str__(self) -> str:
        return str(self.spec)

    def _per_image(self, t: Tensor, n: int) -> Tensor:
        """Expand a buffer with batch dimension 1 or n to n."""
        return t if t.shape[0] == n else t.expand(n, *t.shape[1:])


class LinearOperator(Operator):
    """A linear operator: adds ``A_adjoint`` and a pseudo-inverse.

    The default ``A_pinv`` is the minimum-norm least-squares solution by conjugate gradients on the normal
    equations AᴴA x = Aᴴy started at 0 (whose iterates stay in the range of Aᴴ); subclasses with a closed form
    override it. ``A_adjoint`` defaults to the autograd vector-Jacobian product of ``A``; subclasses override it
    with an explicit formula, which the tests compare against that autograd oracle."""

    linear: ClassVar[bool] = True
    #: True when the class implements the SVD pieces (``Vt``, ``V``, ``Ut``, ``U``, ``singulars``)
    has_svd: ClassVar[bool] = False
    cg_iterations: int = 100
    cg_tolerance: float = 1e-6

    def A_adjoint(self, y: Tensor) -> Tensor:
        x0 = torch.zeros((y.shape[0], *self.image_shape), dtype=self.image_dtype, device=y.device)
        return autograd_adjoint(self.A, x0, y)

    def A_pinv(self, y: Tensor) -> Tensor:
        return self.least_squares(y)

    def AtA(self, x: Tensor) -> Tensor:
        return self.A_adjoint(self.A(x))

    def least_squares(self, y: Tensor, damping: float = 0.0, iterations: int | None = None) -> Tensor:
        """argmin ‖Ax − y‖² + damping‖x‖² by conjugate gradients, per image (minimum-norm when damping = 0)."""
        b = self.A_adjoint(y)
        return conjugate_gradient(lambda v: self.AtA(v) + damping * v, b,
                                  iterations or self.cg_iterations, self.cg_tolerance)

    # ----------------------------------------------------------------------------------------------------------------
    # SVD pieces: A = U diag(s) Vᴴ. Spectral coefficients have the shape ``spectral_shape`` (per image).
    # Vt: image -> coefficients (orthonormal); V: its adjoint/inverse; Ut: measurement -> coefficients, zero where
    # s = 0; U: coefficients -> measurement. ``singulars()`` is broadcastable to (B, *spectral_shape).
    def Vt(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"operator '{self.spec.family}' has no SVD")

    def V(self, c: Tensor) -> Tensor:
        raise NotImplementedError(f"operator '{self.spec.family}' has no SVD")

    def Ut(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"operator '{self.spec.family}' has no SVD")

    def U(self, c: Tensor) -> Tensor:
        raise NotImplementedError(f"operator '{self.spec.family}' has no SVD")

    def singulars(self) -> Tensor:
        raise NotImplementedError(f"operator '{self.spec.family}' has no SVD")

    def svd_pinv(self, y: Tensor, rcond: float = 0.0) -> Tensor:
        """V diag(1/s) Uᴴ y, dropping singular values at or below rcond·max(s)."""
        s = self.singulars()
        smax = s.abs().reshape(s.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (s.dim() - 1)))
        keep = s.abs() > rcond * smax
        inv = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
        return self.V(inv * self.Ut(y))


def autograd_adjoint(A, x0: Tensor, y: Tensor) -> Tensor:
    """Aᴴy as the vector-Jacobian product of a linear A (exact for any linear A that autograd can trace)."""
    with torch.enable_grad():
        x = x0.detach().requires_grad_(True)
        out = A(x)
        if out.is_complex() and not x.is_complex():
            # d Re<out, y> / dx for real x: autograd's convention for complex outputs gives conj; use the real form
            (grad,) = torch.autograd.grad(inner(out, y).sum(), x)
        else:
            (grad,) = torch.autograd.grad(out, x, grad_outputs=y)
    return grad


def conjugate_gradient(apply, b: Tensor, iterations: int, tolerance: float) -> Tensor:
    """Solve apply(x) = b (apply Hermitian positive semi-definite) per image, starting at x = 0. An image stops
    changing once its own residual is below ``tolerance``·‖b‖, so its result does not depend on the batch."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = inner(r, r)
    b_norm = inner(b, b).clamp_min(1e-30)
    shape = (-1,) + (1,) * (b.dim() - 1)
    for _ in range(iterations):
        active = rs > tolerance**2 * b_norm
        if not bool(active.any()):
            break
        Ap = apply(p)
        denom = inner(p, Ap)
        alpha = torch.where(active & (denom > 0), rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * Ap
        rs_new = inner(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta.reshape(shape) * p
        rs = rs_new
    return x


def _shape(shape: tuple) -> str:
    return "×".join(str(s) for s in shape)
