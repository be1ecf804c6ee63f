"""The pseudo-inverse baseline: x̂ = A⁺y (bicubic-like upsampling for SR, zero filling for masks and MRI, filtered
back-projection for CT, truncated-SVD deconvolution for separable blurs). Every table shows it beside the diffusion
solvers, so that what the prior adds is visible. Uses no prior network and no noise level (there is nothing to weigh
the data against): on ``denoise`` it returns the noisy input."""

from __future__ import annotations

from .base import Solver, SolverError, to_pm1


class PinvSolver(Solver):
    name = "pinv"
    description = "baseline x = A⁺y (no prior)"
    needs = frozenset()
    defaults: dict = {}
    presets = {"default": {"description": "A⁺y"}}
    stochastic = False
    baseline = True  # no prior; in every bench table

    def check(self, op, prior) -> None:
        try:
            op.A_pinv  # noqa: B018 - every operator has it; nonlinear ones raise when called
        except AttributeError:
            raise SolverError(f"operator '{op.spec.family}' has no pseudo-inverse.") from None

    def sample(self, y, op, prior, rng, progress=None):
        x01 = op.A_pinv(y)
        x01 = x01.real if x01.is_complex() else x01
        if progress:
            progress(1, 1)
        return to_pm1(x01.clamp(0, 1))
