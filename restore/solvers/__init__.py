"""Zero-shot diffusion solvers for inverse problems, the pseudo-inverse baseline and the classical baselines
(``baselines``: tv, bicubic, wiener, biharmonic, nlm, bm3d, fbp, zerofill).

>>> from restore.solvers import get_solver, solve
>>> result = solve(get_solver("dps", preset="sr4"), y, op, prior, seeds=[0])
"""

from __future__ import annotations

from .base import Cost, Result, Solver, SolverError, solve
from .pinv import PinvSolver

SOLVERS: dict[str, type[Solver]] = {}


def register(cls: type[Solver]) -> type[Solver]:
    SOLVERS[cls.name] = cls
    return cls


register(PinvSolver)


def _load_optional():
    """Import every module of this package but ``base`` (each solver module's Solver subclasses register
    themselves), so that a new solver is one new file."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Solver) and obj is not Solver and obj.name:
                SOLVERS.setdefault(obj.name, obj)


_load_optional()


def get_solver(name: str, preset: str | None = None, **params) -> Solver:
    if name not in SOLVERS:
        raise SolverError(f"unknown solver '{name}'; use one of {', '.join(sorted(SOLVERS))} "
                          f"('restore list solvers' shows them).")
    return SOLVERS[name](preset=preset, **params)


__all__ = ["Cost", "Result", "SOLVERS", "Solver", "SolverError", "get_solver", "register", "solve"]
