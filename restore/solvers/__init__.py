"""Zero-shot diffusion solvers for inverse problems, and the pseudo-inverse baseline.

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
    """Import the solver modules that exist (they register themselves)."""
    import importlib

    for module in ("dps", "ddnm", "daps", "reddiff", "resample"):
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module}":
                continue
            raise
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
