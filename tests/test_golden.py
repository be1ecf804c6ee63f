"""Golden outputs: every registered solver × every operator family gives the same result as when
``tests/golden/solvers.pt`` was written, or the same refusal — a safety net for refactors of the solver internals.

The cases, how they run and what is stored are defined once, in ``tests/golden/make_golden.py`` (its docstring):
``restore.solvers.solve`` on the tiny random priors of ``tests/solver_testing.py`` (a latent one for the latent
solvers and for ``daps@latent``), batch 2 with per-image seeds, σ_y = 0.01, 3 steps, ``samples=1`` (and one case with
``samples=2``). One test per case, named ``solver/family``, so a failure names both.

What a case checks (all of it, reported together):
* a case recorded as refused still raises the same error type (SolverError, or OperatorError for pinv on phase
  retrieval) and a case with an output still runs — so the set of refused (solver, family) pairs stays the same;
* ``Result.x`` (on [0, 1], clamped) and, for K = 2, ``Result.std`` within the case's tolerance, and the unclamped
  output of ``Solver.sample`` (``raw``, relative to max(1, max |raw|)) within its own: each is
  max(1e-5, 10 × the round-off sensitivity the generator measured for the case: the change from a one-ulp change of
  y and from running on two threads). That is 1e-5 for 55 of the 120 outputs and at most 5e-4 for 111 (ill-conditioned
  pseudo-inverses on blur, DAPS, DDRM, PiGDM); DPS reaches 6e-3 (phase retrieval: its outputs move that much between
  one and two threads, the reduction order of the network's backward pass), DiffPIR and DPIR on CT 2.3e-2 and 2.9e-2
  (ill-conditioned least-squares solves) — below what a wrong scale or random stream gives (order 0.1–1). Checked: a
  factor 2 in the σ_y told to the solvers is caught in every case where it changes the output at all, but
  diffpir/mask-random and diffpir/ct (DiffPIR's six other families catch it);
* ``Result.samples``, ``failed``, ``cost.nfe``, ``cost.operator_evals`` equal, and ``Result.params`` equal (floats to
  a relative 1e-5).

An intended change of outputs: regenerate with ``OMP_NUM_THREADS=1 .venv/bin/python tests/golden/make_golden.py``
(a few minutes: each case runs four times to check its reproducibility and measure its round-off) and say why in
the commit. A new solver or family has no golden entry: its test fails and asks for the same.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
if str(GOLDEN_DIR) not in sys.path:
    sys.path.insert(0, str(GOLDEN_DIR))

import make_golden as mg  # noqa: E402
from solver_testing import smoke_problem  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = mg.cases()
REGENERATE = (f"run `{mg.REGENERATE}` and commit {mg.GOLDEN.relative_to(GOLDEN_DIR.parent.parent)} (say why in "
              f"the commit)")


@pytest.fixture(scope="module")
def golden() -> dict:
    if not mg.GOLDEN.exists():
        pytest.fail(f"{mg.GOLDEN} is missing: {REGENERATE}.")
    return torch.load(mg.GOLDEN, weights_only=True)


def _params_differ(expected, got, path: str = "params") -> list[str]:
    """Where two JSON values differ (floats to a relative 1e-5)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = [f"{path}: key '{k}' {'missing' if k in expected else 'new'}" for k in sorted(set(expected) ^ set(got))]
        for k in sorted(set(expected) & set(got)):
            out += _params_differ(expected[k], got[k], f"{path}.{k}")
        return out
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        return [d for i, (a, b) in enumerate(zip(expected, got)) for d in _params_differ(a, b, f"{path}[{i}]")]
    numbers = (int, float)
    if (isinstance(expected, numbers) and isinstance(got, numbers) and not isinstance(expected, bool)
            and not isinstance(got, bool)):
        if math.isclose(expected, got, rel_tol=1e-5, abs_tol=1e-12) or (math.isnan(expected) and math.isnan(got)):
            return []
    elif expected == got:
        return []
    return [f"{path}: {expected!r} → {got!r}"]


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_case(case, golden):
    key = case.key
    if key not in golden["cases"] and key not in golden["refused"]:
        pytest.fail(f"no golden entry for '{key}' (a new solver, operator family or case): {REGENERATE}.")

    if key in golden["refused"]:
        want = golden["refused"][key]
        try:
            mg.run_case(case)
        except mg.REFUSALS as err:
            assert type(err).__name__ == want["error"], (
                f"{key}: refused with {type(err).__name__} ({err}), was {want['error']} ({want['message']})")
            return
        pytest.fail(f"{key}: the solver used to refuse this case ({want['error']}: {want['message']}) but now runs")

    want = golden["cases"][key]
    try:
        got = mg.run_case(case)
    except mg.REFUSALS as err:
        pytest.fail(f"{key}: the solver used to run this case but now refuses it: {type(err).__name__}: {err}")

    problems = []
    if got["raw"] is None:
        problems.append("Solver.sample's output was not caught (does solve() still call solver.sample?): update "
                        "_catch_raw in tests/golden/make_golden.py")
    diff = mg.differences(want, got)
    for kind, what in (("x", "Result.x (and std) on [0, 1]"), ("raw", "Solver.sample's raw output (relative)")):
        tol = mg.tolerance(want, kind)
        if not diff[kind] <= tol:
            problems.append(f"{what}: max |Δ| {diff[kind]:.3g} > tolerance {tol:.3g}")
    for field in ("samples", "failed", "nfe", "operator_evals"):
        if got[field] != want[field]:
            problems.append(f"{field}: {want[field]!r} → {got[field]!r}")
    problems += _params_differ(json.loads(want["params"]), json.loads(got["params"]))
    assert not problems, f"{key} differs from its golden record:\n  " + "\n  ".join(problems) + (
        f"\n(if the change is intended: {REGENERATE})")


def test_golden_has_exactly_the_current_cases(golden):
    """Every case of the registered solvers has an entry, and no entry is left for a solver or family that is gone."""
    keys = {c.key for c in CASES}
    stored = set(golden["cases"]) | set(golden["refused"])
    missing, stale = sorted(keys - stored), sorted(stored - keys)
    unrecorded = sorted(set(mg.SOLVERS) - set(golden["meta"]["solvers"]))
    assert not (missing or stale or unrecorded), (
        f"the golden file does not match the registered solvers: no entry for {missing or 'none'}, "
        f"entries for cases that no longer exist {stale or 'none'}, solvers not in the golden file "
        f"{unrecorded or 'none'}; {REGENERATE}.")


def test_inputs_unchanged(golden):
    """The measurements and the tiny priors are those the golden outputs were made from (a failure here means the
    test inputs changed — ``tests/solver_testing.py``, the operators or the priors — not necessarily a solver)."""
    problems = []
    for family, y_want in golden["inputs"].items():
        _, _, _, y = smoke_problem(family, seed=0, batch=len(mg.SEEDS), sigma_y=mg.SIGMA)
        y = (torch.view_as_real(y) if y.is_complex() else y).float()
        if y.shape != y_want.shape or not torch.allclose(y, y_want, rtol=0, atol=1e-6):
            problems.append(f"measurement of '{family}'")
    for name, value in mg.prior_fingerprints().items():
        if not torch.allclose(value, golden["priors"][name], rtol=1e-6, atol=0):
            problems.append(f"prior '{name}' weights")
    assert not problems, f"the golden test inputs changed: {', '.join(problems)}; if intended, {REGENERATE}."
