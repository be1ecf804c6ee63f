"""Operator spec strings: ``family:key=value,key=value``.

A spec names an operator family and its parameters, e.g. ``sr:factor=4,kernel=bicubic`` or
``mri:accel=4,center=0.08,pattern=equispaced``. Each family declares its parameters once (type, default,
allowed values); ``parse`` validates a string against that declaration and ``str(spec)`` gives the canonical
form (every parameter, in declaration order), so ``parse(str(spec)) == spec``.

A spec describes the *configuration*: random parameters (a mask position, a motion kernel) are drawn when the
operator is built for an image size and a seed (see ``operators.build``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping


class OperatorError(ValueError):
    """A user-facing problem with an operator spec, its parameters or its input. The message is one sentence
    that names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared parameter of an operator family."""

    type: type  # int, float, str or bool
    default: Any
    help: str = ""
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error fragment, or None when valid

    def convert(self, family: str, key: str, raw: Any) -> Any:
        value = raw
        if isinstance(raw, str) and self.type is not str:
            text = raw.strip()
            try:
                if self.type is bool:
                    lowered = text.lower()
                    if lowered in ("1", "true", "yes", "on"):
                        value = True
                    elif lowered in ("0", "false", "no", "off"):
                        value = False
                    else:
                        raise ValueError(text)
                elif self.type is int:
                    as_float = float(text)
                    if as_float != int(as_float):
                        raise ValueError(text)
                    value = int(as_float)
                else:
                    value = self.type(text)
            except ValueError:
                raise OperatorError(
                    f"parameter '{key}' of operator '{family}' must be {_type_name(self.type)}, got '{raw}'."
                ) from None
        elif self.type is float and isinstance(raw, int) and not isinstance(raw, bool):
            value = float(raw)
        elif not isinstance(raw, self.type) or (self.type is int and isinstance(raw, bool)):
            raise OperatorError(
                f"parameter '{key}' of operator '{family}' must be {_type_name(self.type)}, got {raw!r}."
            )
        if self.choices is not None and value not in self.choices:
            options = ", ".join(str(c) for c in self.choices)
            raise OperatorError(f"parameter '{key}' of operator '{family}' must be one of {options}; got '{value}'.")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise OperatorError(f"parameter '{key}' of operator '{family}' {problem}; got '{value}'.")
        return value


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[t]


def positive(value) -> str | None:
    return None if value > 0 else "must be positive"


def non_negative(value) -> str | None:
    return None if value >= 0 else "must be zero or positive"


def fraction(value) -> str | None:
    return None if 0 < value < 1 else "must lie strictly between 0 and 1"


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest round-tripping form
    return str(value)


@dataclasses.dataclass(frozen=True)
class OperatorSpec:
    """A validated operator configuration: a family name and the full set of its parameters."""

    family: str
    params: tuple[tuple[str, Any], ...]

    def __str__(self) -> str:
        if not self.params:
            return self.family
        return self.family + ":" + ",".join(f"{k}={_format(v)}" for k, v in self.params)

    def __getitem__(self, key: str) -> Any:
        return dict(self.params)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def replace(self, **changes: Any) -> "OperatorSpec":
        """A copy with some parameters changed (validated again)."""
        merged = {**self.as_dict(), **changes}
        return make_spec(self.family, merged)


# family name -> (parameter declarations, the operator class) ; filled by operators.registry
FAMILIES: dict[str, Mapping[str, Param]] = {}
PRESETS: dict[str, tuple[str, str]] = {}  # name -> (spec string, description)


def make_spec(family: str, values: Mapping[str, Any]) -> OperatorSpec:
    if family not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise OperatorError(
            f"unknown operator '{family}'; use one of {known} or a preset ('restore list operators' shows them)."
        )
    declared = FAMILIES[family]
    for key in values:
        if key not in declared:
            valid = ", ".join(declared) or "none"
            raise OperatorError(f"operator '{family}' has no parameter '{key}'; its parameters are: {valid}.")
    params = tuple(
        (key, param.convert(family, key, values[key]) if key in values else param.default)
        for key, param in declared.items()
    )
    return OperatorSpec(family, params)


def parse(text: str | OperatorSpec) -> OperatorSpec:
    """Parse ``family:key=value,...`` or a preset name (optionally followed by ``:key=value`` overrides)."""
    if isinstance(text, OperatorSpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise OperatorError("the operator spec is empty; give one such as 'sr:factor=4' or a preset such as 'sr4'.")
    text = text.strip()
    head, _, tail = text.partition(":")
    head = head.strip()
    values: dict[str, Any] = {}
    if head in PRESETS and head not in FAMILIES:
        base = parse(PRESETS[head][0])
        head, values = base.family, base.as_dict()
    if tail.strip():
        for item in tail.split(","):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise OperatorError(
                    f"cannot read '{item.strip()}' in operator spec '{text}'; write parameters as key=value "
                    f"separated by commas, e.g. 'sr:factor=4,kernel=bicubic'."
                )
            values[key.strip()] = value.strip()
    return make_spec(head, values)
