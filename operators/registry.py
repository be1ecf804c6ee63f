"""The registry of operator families and named presets, and ``build``/``measure``."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from . import seeding
from .base import Operator
from .noise import Noise
from .spec import FAMILIES, PRESETS, OperatorError, OperatorSpec, parse

OPERATORS: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: make an operator family known to ``parse`` and ``build``."""
    OPERATORS[cls.family] = cls
    FAMILIES[cls.family] = cls.params
    return cls


def preset(name: str, spec: str, description: str) -> None:
    PRESETS[name] = (spec, description)


def build(
    spec: "str | OperatorSpec",
    image_shape: Sequence[int],
    seeds: Sequence[int] | int = (0,),
    device: "str | torch.device" = "cpu",
    state: Mapping[str, Tensor] | None = None,
) -> Operator:
    """Build the operator ``spec`` for images of shape ``(C, H, W)``.

    Random parameters (mask positions, motion kernels, MRI lines, coil maps) are drawn per image from the
    "operator" stream of each seed in ``seeds``: one seed gives parameters shared by any batch, B seeds give B
    sets. ``state`` (buffers saved from an earlier build, e.g. in a measurement file) replaces the drawn ones."""
    spec = parse(spec)
    if len(image_shape) != 3 or any(int(s) <= 0 for s in image_shape):
        raise OperatorError(f"the image shape must be (channels, height, width), got {tuple(image_shape)}.")
    if isinstance(seeds, int):
        seeds = (seeds,)
    if len(seeds) == 0:
        raise OperatorError("build needs at least one seed.")
    cls = OPERATORS[spec.family]
    op = cls(spec, tuple(int(s) for s in image_shape), seeding.generators(seeds, "operator"))
    if state:
        for name, value in state.items():
            if name not in op._buffers:
                raise OperatorError(f"the saved state has a parameter '{name}' that operator '{spec.family}' does "
                                    f"not use; the measurement file does not belong to this operator.")
            current = op._buffers[name]
            if current is not None and tuple(value.shape[1:]) != tuple(current.shape[1:]):
                raise OperatorError(f"the saved '{name}' has shape {tuple(value.shape)} but operator '{spec}' "
                                    f"for images {tuple(image_shape)} needs {tuple(current.shape)}.")
            op._buffers[name] = value.to(current.dtype if current is not None else value.dtype)
    return op.to(device)


def measure(op: Operator, x: Tensor, noise: "Noise | str | float | None", seeds: Sequence[int] | int) -> Tensor:
    """y = A(x) + noise, the noise of image i drawn from the "noise" stream of ``seeds[i]``."""
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(x.shape[0])]
    if len(seeds) != x.shape[0]:
        raise OperatorError(f"measure got {len(seeds)} seeds for a batch of {x.shape[0]} images.")
    op.check_image(x)
    with torch.no_grad():
        y = op.A(x)
    mask = op.noise_mask()
    return Noise.parse(noise).sample(y, seeding.generators(seeds, "noise"), mask)


def describe() -> list[tuple[str, str, str]]:
    """(family, canonical default spec, description) for every family."""
    return [(name, str(parse(name)), cls.description) for name, cls in sorted(OPERATORS.items())]
