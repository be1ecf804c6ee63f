"""Measurement operators y = A(x) + noise for image restoration and inverse problems.

>>> import operators, torch
>>> op = operators.build("sr:factor=4,kernel=bicubic", (3, 256, 256), seeds=[0])
>>> y = operators.measure(op, torch.rand(1, 3, 256, 256), noise=0.025, seeds=[0])

See ``operators.base`` for the conventions and ``restore list operators`` for every family and preset.
"""

from .base import LinearOperator, Operator, inner
from .noise import Noise
from .registry import OPERATORS, build, describe, measure, register
from .spec import PRESETS, OperatorError, OperatorSpec, parse

# importing the families registers them
from . import simple, mask, blur, resize, mri, ct  # noqa: E402,F401  isort: skip

__all__ = [
    "Operator", "LinearOperator", "Noise", "OperatorError", "OperatorSpec", "OPERATORS", "PRESETS",
    "build", "describe", "inner", "measure", "parse", "register",
]
