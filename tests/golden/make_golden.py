"""Golden outputs of every registered solver, for ``tests/test_golden.py`` (a safety net for refactors of the solver
internals: the outputs must not change beyond float round-off).

Regenerate (only when a change of the outputs is intended, and say why in the commit)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/golden/make_golden.py

A new solver's cases alone, the others kept as recorded (``--only=NAME[,NAME]``)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/golden/make_golden.py --only=dpir

The cases. Every solver in ``restore.solvers.SOLVERS`` × every operator family of ``SMOKE_SPECS``
(``tests/solver_testing.py``: 16×16 images, 3 channels, 1 for mri and ct), batch 2 (seeds 0 and 1), a noisy
measurement (σ_y = 0.01 on [0, 1], told to the solver), through ``restore.solvers.solve`` with ``samples=1``:

* pixel solvers on ``tiny_unet_prior`` (a tiny random ADM UNet), keyed ``"solver/family"``;
* latent solvers (needs "latent": psld, resample) on a tiny random latent prior (``tiny_latent_prior`` below, the one
  of ``tests/test_solver_psld.py``), keyed ``"solver/family"`` too;
* solvers that take either prior (``BOTH``: daps) also on the latent prior, keyed ``"solver@latent/family"``;
* one K-sample case, ``"dps/sr/samples=2"`` (mean and per-pixel standard deviation over K = 2).

Each solver gets the preset the command line would choose (``auto_preset(op, prior)``) with its step parameter
(``Solver.steps_param``) set to 3, plus the few overrides of ``TINY`` that keep inner loops tiny. A solver that
refuses the combination (``REFUSALS``: a SolverError, or an OperatorError such as pinv's on phase retrieval) has the
refusal recorded instead of an output: the refused set is part of the golden data.

Stored (``solvers.pt``, ``torch.save`` of plain dicts, lists and float32 tensors; ``torch.load(weights_only=True)``):

* ``cases[key]``: ``raw`` (what ``Solver.sample`` returned to ``solve``, on [-1, 1] and not clamped, stacked over
  the K samples: see ``run_case``), ``x`` (``Result.x``, the estimate on [0, 1]; None where it is ``x_from_raw(raw)``
  bit for bit, i.e. K = 1), ``std`` (K > 1) or None, ``samples``, ``failed``, ``nfe``, ``operator_evals``,
  ``params`` (``Result.params`` as JSON) and ``roundoff`` (the measured round-off sensitivity that sets the case's
  tolerance, see ``generate`` and ``tolerance``);
* ``refused[key]``: ``{"error": "SolverError" or "OperatorError", "message": …}`` (the test checks that the same error
  type is raised; the message is informative only);
* ``inputs[family]``: the measurement y, and ``priors[name]``: a fingerprint of the tiny priors' networks, so that a
  change of the test inputs is told apart from a change of a solver.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from operators import OperatorError  # noqa: E402
from restore.solvers import SOLVERS, SolverError, get_solver, solve  # noqa: E402
from solver_testing import SMOKE_SPECS, smoke_problem, tiny_latent_prior  # noqa: E402

GOLDEN = HERE / "solvers.pt"
REGENERATE = "OMP_NUM_THREADS=1 .venv/bin/python tests/golden/make_golden.py"

SIGMA = 0.01          # measurement noise σ_y on [0, 1]
SEEDS = [0, 1]        # batch 2
STEPS = 3             # the solver's step parameter (Solver.steps_param)
FAMILIES = list(SMOKE_SPECS)
#: solvers that run on a pixel and on a latent prior (a latent case each too)
BOTH = ("daps",)
#: overrides beyond the step parameter, on top of the auto preset: inner loops kept tiny, every branch still taken
TINY: dict[str, dict] = {
    # 3 annealing levels × 1 ODE step, 2 Langevin/HMC steps per level
    "daps": dict(ode_steps=1, mcmc_steps=2),
    # 6 DDIM steps, lookahead 1: hard data consistency at indices 4, 3, 2 (pixel space) and 1 (latent space)
    "resample": dict(steps=6, skip=1, splits=3, lookahead=1, pixel_iters=3, latent_iters=3, window=2),
    "wiener": dict(cg_iterations=20),
}
#: the errors that are refusals: a SolverError (``check`` before any work) or an OperatorError the operator raises
#: for something it cannot do (pinv on phase retrieval: no pseudo-inverse)
REFUSALS = (SolverError, OperatorError)
#: the comparison: |Δ| ≤ max(ATOL, MARGIN × the case's round-off sensitivity), on [0, 1] images (``tolerance``)
ATOL = 1e-5
MARGIN = 10.0
#: the K-sample case(s): (solver, family, K)
K_SAMPLES = [("dps", "sr", 2)]


@dataclasses.dataclass(frozen=True)
class Case:
    key: str
    solver: str
    family: str
    latent: bool = False
    samples: int = 1


def cases() -> list[Case]:
    """Every case for the solvers registered now, in a fixed order."""
    out = []
    for name in sorted(SOLVERS):
        cls = SOLVERS[name]
        latent_only = "latent" in cls.needs
        for family in FAMILIES:
            out.append(Case(f"{name}/{family}", name, family, latent=latent_only))
            if name in BOTH and not latent_only:
                out.append(Case(f"{name}@latent/{family}", name, family, latent=True))
    for name, family, k in K_SAMPLES:
        if name in SOLVERS:
            out.append(Case(f"{name}/{family}/samples={k}", name, family, samples=k))
    return out




def problem(case: Case):
    """(prior, op, y) of a case, built afresh (no state shared between cases)."""
    prior, op, _, y = smoke_problem(case.family, seed=0, batch=len(SEEDS), sigma_y=SIGMA)
    if case.latent:
        prior = tiny_latent_prior(channels=SMOKE_SPECS[case.family][1][0], size=SMOKE_SPECS[case.family][1][1])
    return prior, op, y


def make_solver(case: Case, op, prior):
    """The solver as the command line makes it: the auto preset, the step parameter set to STEPS, plus TINY."""
    cls = SOLVERS[case.solver]
    probe = get_solver(case.solver)
    preset = probe.auto_preset(op, prior)
    overrides = {}
    if cls.steps_param and cls.steps_param in cls.defaults:
        overrides[cls.steps_param] = STEPS
    overrides.update({k: v for k, v in TINY.get(case.solver, {}).items() if k in cls.defaults})
    return get_solver(case.solver, preset=preset, **overrides)


def run_case(case: Case, perturb: bool = False) -> dict:
    """The full record of one case; raises one of ``REFUSALS`` where the solver refuses it. ``perturb``: the
    measurement changed by a relative 1e-7 (about one float32 ulp) first, to measure the case's round-off
    sensitivity.

    ``raw``: what ``Solver.sample`` returned to ``solve`` (on [-1, 1], before ``solve`` maps it to [0, 1] and clamps),
    one per posterior sample, stacked (K, B, C, H, W). The tiny random priors saturate many outputs with 3 steps (all
    but 1 % of the pixels of DAPS on pixel priors are 0 or 1 after the clamp), so ``raw`` is what constrains those
    solvers. It is caught by wrapping the solver instance's ``sample``: if a refactor stops ``solve`` from calling
    ``solver.sample`` (or changes what it returns), update ``_catch_raw`` and regenerate."""
    prior, op, y = problem(case)
    if perturb:
        y = perturbed(y)
    solver = make_solver(case, op, prior)
    raw = _catch_raw(solver)
    res = solve(solver, y, op, prior, seeds=SEEDS, noise=SIGMA, samples=case.samples)
    return {
        "x": res.x.detach().cpu().float().contiguous(),
        "std": None if res.std is None else res.std.detach().cpu().float().contiguous(),
        "raw": torch.stack(raw) if raw else None,
        "samples": int(res.samples),
        "failed": list(res.failed),
        "nfe": int(res.cost.nfe),
        "operator_evals": int(res.cost.operator_evals),
        "params": params_json(res.params),
    }


def _catch_raw(solver) -> list[torch.Tensor]:
    """Wrap ``solver.sample`` (on the instance) so that each tensor it returns is kept (CPU float32 copies)."""
    caught: list[torch.Tensor] = []
    inner = solver.sample

    def sample(*args, **kwargs):
        out = inner(*args, **kwargs)
        caught.append(out.detach().cpu().float().clone())
        return out

    solver.sample = sample
    return caught


def x_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """``Result.x`` of one posterior sample as ``solve`` makes it from ``raw[0]``: (x + 1)/2 clamped to [0, 1]."""
    return ((raw[0] + 1) / 2).clamp(0, 1)


def stored(record: dict) -> dict:
    """The record as the golden file keeps it: ``x`` left out (None) where it is ``x_from_raw(raw)`` bit for bit
    (K = 1 and no failed image), to keep the file small; ``expected_x`` gives it back."""
    out = dict(record)
    raw = record["raw"]
    if raw is not None and raw.shape[0] == 1 and torch.equal(record["x"], x_from_raw(raw)):
        out["x"] = None
    return out


def expected_x(record: dict) -> torch.Tensor:
    return record["x"] if record["x"] is not None else x_from_raw(record["raw"])


def differences(expected: dict, got: dict) -> dict[str, float]:
    """max |Δ| between two records of a case: ``x`` (over x and std, images on [0, 1]) and ``raw`` (relative to
    max(1, max |raw|): the raw outputs of a random prior reach ±100)."""
    ex, gx = expected_x(expected), got["x"]
    if ex.shape != gx.shape:
        return {"x": math.inf, "raw": math.inf}
    dx = float((ex - gx).abs().max())
    if (expected["std"] is None) != (got["std"] is None):
        dx = math.inf
    elif expected["std"] is not None:
        dx = max(dx, float((expected["std"] - got["std"]).abs().max()))
    er, gr = expected["raw"], got["raw"]
    if er is None or gr is None or er.shape != gr.shape:
        dr = math.inf
    else:
        dr = float((er - gr).abs().max()) / max(1.0, float(er.abs().max()))
    return {"x": dx, "raw": dr}


def tolerance(record: dict, kind: str) -> float:
    """The tolerance of a case's ``kind`` ("x" or "raw", as ``differences`` measures them): ATOL, or MARGIN × the
    round-off sensitivity measured for it where that is larger (an ill-conditioned pseudo-inverse amplifies one ulp
    of y a thousandfold; DPS's outputs move by up to 6e-4 between one and two threads)."""
    return max(ATOL, MARGIN * float(record.get("roundoff", {}).get(kind, 0.0)))


def perturbed(y: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(12345)
    noise = torch.randn((*y.shape, 2) if y.is_complex() else y.shape, generator=g, dtype=torch.float32)
    noise = torch.view_as_complex(noise) if y.is_complex() else noise
    return y + noise.to(y.dtype) * y.abs().clamp_min(1e-3) * 1e-7


def params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=repr)


def inputs() -> dict[str, torch.Tensor]:
    """The measurement y of every family (complex ones as real views)."""
    out = {}
    for family in FAMILIES:
        _, _, _, y = smoke_problem(family, seed=0, batch=len(SEEDS), sigma_y=SIGMA)
        out[family] = (torch.view_as_real(y) if y.is_complex() else y).detach().float().contiguous()
    return out


def prior_fingerprints() -> dict[str, torch.Tensor]:
    """Each tiny prior's network output on a fixed input, (sum, sum of squares) of its weights."""
    out = {}
    for name, prior in (("pixel-rgb", smoke_problem("sr")[0]), ("pixel-grey", smoke_problem("mri")[0]),
                        ("latent-rgb", tiny_latent_prior(3)), ("latent-grey", tiny_latent_prior(1))):
        params = [p.detach().double() for p in prior.net.parameters()]
        ae = getattr(prior, "autoencoder", None)
        if isinstance(ae, torch.nn.Module):
            params += [p.detach().double() for p in ae.parameters()]
        out[name] = torch.tensor([float(sum(p.sum() for p in params)), float(sum((p * p).sum() for p in params))])
    return out


def generate(only: "list[str] | None" = None) -> dict:
    """All records (of the solvers in ``only``, if given); each case run 4 times: the record (one thread), the same
    again in the reverse order (identical but for round-off in external libraries), with a perturbed measurement and
    on two threads (its round-off sensitivity, which sets its tolerance)."""
    torch.set_num_threads(1)
    records, refused = {}, {}
    all_cases = [c for c in cases() if only is None or c.solver in only]
    total = 0.0
    for case in all_cases:
        start = time.perf_counter()
        try:
            records[case.key] = run_case(case)
            what = "ok"
        except REFUSALS as err:
            refused[case.key] = {"error": type(err).__name__, "message": str(err)}
            what = "refused"
        seconds = time.perf_counter() - start
        total += seconds
        print(f"{case.key:32s} {what:8s} {seconds:6.2f} s", flush=True)
    print(f"one pass: {total:.1f} s")

    # the same outputs again, in the reverse order (no state carried from one case to the next, no global RNG);
    # a difference at round-off level is tolerated (and reported): bm3d's C library differs by ~1e-7 from call to
    # call in one process; anything larger is an error to fix before the outputs can be golden
    repeat, differ = {}, []
    for case in reversed(all_cases):
        if case.key in records:
            repeat[case.key] = differences(records[case.key], run_case(case))
            if max(repeat[case.key].values()) > 0:
                differ.append(f"{case.key}: max |Δ| {max(repeat[case.key].values()):.3g}")
    print("nondeterministic cases:", "; ".join(differ) or "none")
    if any(max(d.values()) > ATOL for d in repeat.values()):
        raise SystemExit("some cases are not reproducible (fix that first): " + "; ".join(differ))

    # round-off sensitivity: a one-ulp change of y, and two threads (other reduction orders inside the network)
    for case in all_cases:
        record = records.get(case.key)
        if record is None:
            continue
        nudged = differences(record, run_case(case, perturb=True))
        torch.set_num_threads(2)
        try:
            threads = differences(record, run_case(case))
        finally:
            torch.set_num_threads(1)
        record["roundoff"] = {k: max(nudged[k], threads[k], repeat[case.key][k]) for k in ("x", "raw")}
        print(f"{case.key:32s} round-off x: y nudged {nudged['x']:.2g}, 2 threads {threads['x']:.2g}; raw: "
              f"{nudged['raw']:.2g}, {threads['raw']:.2g}  ->  atol x {tolerance(record, 'x'):.2g}, "
              f"raw {tolerance(record, 'raw'):.2g}", flush=True)

    return {
        "cases": {key: stored(record) for key, record in records.items()},
        "refused": refused,
        "inputs": inputs(),
        "priors": prior_fingerprints(),
        "meta": {"sigma": SIGMA, "seeds": SEEDS, "steps": STEPS, "families": FAMILIES, "solvers": sorted(SOLVERS),
                 "torch": str(torch.__version__), "atol": ATOL, "margin": MARGIN, "regenerate": REGENERATE},
    }


def generate_only(solvers: list[str]) -> dict:
    """The golden file with only these solvers' cases (re)generated and every other case kept as recorded: for a new
    solver, so that the other solvers' outputs are not re-recorded with today's round-off. The test inputs and tiny
    priors must be the recorded ones."""
    unknown = set(solvers) - set(SOLVERS)
    if unknown:
        raise SystemExit(f"no solver {', '.join(sorted(unknown))}; registered: {', '.join(sorted(SOLVERS))}")
    old = torch.load(GOLDEN, weights_only=True)
    new = generate(only=solvers)
    for part in ("inputs", "priors"):
        for key, value in new[part].items():
            if key not in old[part] or not torch.equal(value, old[part][key]):
                raise SystemExit(f"the test {part} '{key}' differ from the recorded ones: regenerate every case")
    for part in ("cases", "refused"):
        old[part] = {k: v for k, v in old[part].items() if k.split("/")[0].split("@")[0] not in solvers}
        old[part].update(new[part])
    old["meta"]["solvers"] = sorted(SOLVERS)
    return old


def main() -> None:
    only = [s for arg in sys.argv[1:] if arg.startswith("--only=") for s in arg[len("--only="):].split(",") if s]
    golden = generate_only(only) if only else generate()
    torch.save(golden, GOLDEN)
    print(f"{len(golden['cases'])} outputs, {len(golden['refused'])} refusals; wrote {GOLDEN} "
          f"({GOLDEN.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
