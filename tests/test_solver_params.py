"""Solver parameters: the declared rules (``Solver.rules``) cover real parameters, every preset satisfies them, a bad
value is refused when the solver is made with one sentence in one style, and no solver changes its parameters while
sampling."""

import pytest

from restore.solvers import SOLVERS, SolverError, get_solver
from restore.solvers.base import Rule, at_least, between, one_of, positive


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_rules_name_parameters_and_every_preset_satisfies_them(name):
    cls = SOLVERS[name]
    assert set(cls.rules) <= set(cls.defaults), f"{name}: a rule for an unknown parameter"
    for preset in [None, *cls.presets]:
        get_solver(name, preset=preset)  # raises if a preset breaks a rule


@pytest.mark.parametrize("rule,good,bad,text", [
    (one_of("a", "b"), ["a", "b"], ["c", 1], "one of a, b"),
    (at_least(1), [1, 2.5, 10**6], [0, 0.999, float("nan"), "1"], "at least 1"),
    (positive(), [1e-12, 3], [0, -1], "positive"),
    (between(0, 1), [0, 0.5, 1], [-0.1, 1.01], "in [0, 1]"),
    (between(0, 1, high_open=True), [0, 0.99], [1, 2], "in [0, 1)"),
    (Rule(low=2, low_open=True), [2.1], [2], "above 2"),
])
def test_rule_bounds_and_text(rule, good, bad, text):
    assert all(rule.allows(v) for v in good) and not any(rule.allows(v) for v in bad)
    assert rule.text() == text


@pytest.mark.parametrize("name,kwargs,sentence", [
    ("ddnm", {"eta": "1.5"}, "solver 'ddnm' parameter 'eta' must be in [0, 1], got 1.5."),
    ("dps", {"variance": "wide"}, "solver 'dps' parameter 'variance' must be one of auto, learned, fixedlarge, fixedsmall, got 'wide'."),
    ("diffpir", {"steps": "1"}, "solver 'diffpir' parameter 'steps' must be at least 2, got 1."),
    ("tv", {"iterations": "0"}, "solver 'tv' parameter 'iterations' must be at least 1, got 0."),
])
def test_a_bad_value_is_refused_when_the_solver_is_made(name, kwargs, sentence):
    with pytest.raises(SolverError) as info:
        get_solver(name, **kwargs)  # strings, as --param gives them: cast through the defaults' types first
    assert str(info.value) == sentence
