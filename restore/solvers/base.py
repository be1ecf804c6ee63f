"""What every solver shares: declared needs, presets, per-image generators, the cost record, the NaN guard, and
posterior sampling with K samples (mean and per-pixel standard deviation).

A solver is a class with a ``sample`` method that runs its algorithm once on a batch::

    x = solver.sample(y, op, prior, rng, progress)   # y: measurement; returns the estimate on [-1, 1]

Conventions (see the README):
* the operator acts on **[0, 1]** images; the prior on **[-1, 1]** ones. Solvers work on [-1, 1] and call the operator
  through ``forward01``/``A_on_pm1`` helpers below, so y = A((x+1)/2) + n;
* the measurement noise σ_y is on [0, 1] (``noise_sigma``). A paper written on [-1, 1] (DPS, DAPS) has its residual
  ‖y − A(x)‖ twice as large as ours for the same images: presets say how they translate;
* every random draw inside a solver comes from ``rng`` (``operators.seeding.ImageGenerators``: ``rng.randn_like(x)``,
  image i from generator ``rng[i]``), so an image's
  result does not depend on the batch it is in.

``solve()`` wraps ``sample``: checks needs before any work, counts network and operator evaluations, times, records
peak memory, repeats for K posterior samples (once for a deterministic solver) and makes one estimate of them (their
mean, per-pixel median or first sample), and replaces images that became NaN/Inf by a clear failure.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor

from operators import Operator
from operators.seeding import ImageGenerators, generators

Progress = Callable[[int, int], None]


class SolverError(ValueError):
    """A user-facing problem with a solver, its parameters or an impossible combination: one sentence with the fix."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """What values one solver parameter may take: one of ``choices``, or a number within [low, high] (an open end
    where ``low_open``/``high_open``). Declared per solver in ``Solver.rules`` and checked once, when the solver is
    made, with one sentence in one style."""

    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value) -> bool:
        if self.choices:
            return value in self.choices
        if not isinstance(value, (int, float)) or value != value:  # NaN
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return ("positive" if self.low == 0 else f"above {self.low:g}") if self.low_open else f"at least {self.low:g}"
        return f"{'below' if self.high_open else 'at most'} {self.high:g}"


def one_of(*choices) -> Rule:
    return Rule(choices=tuple(choices))


def at_least(low: float) -> Rule:
    return Rule(low=low)


def positive() -> Rule:
    return Rule(low=0, low_open=True)


def between(low: float, high: float, high_open: bool = False) -> Rule:
    return Rule(low=low, high=high, high_open=high_open)


@dataclasses.dataclass
class Cost:
    nfe: int = 0                 # network evaluations (calls of the prior's network on the batch)
    operator_evals: int = 0      # calls of A, Aᴴ, A⁺ or SVD pieces
    seconds: float = 0.0
    peak_memory_mb: float = 0.0  # CUDA peak, or the process's peak resident memory on the CPU

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Result:
    x: Tensor                    # (B, C, H, W) estimate on [0, 1] from the K samples (see ``estimate``)
    std: Tensor | None           # per-pixel standard deviation over the K samples (K > 1), on [0, 1]
    samples: int                 # K samples drawn (1 for a deterministic solver, whatever was asked)
    cost: Cost
    failed: list[str | None]     # per image: None, or why it failed (NaN/Inf)
    params: dict[str, Any]
    estimate: str = "mean"       # how the K samples became x: "mean", "median" or "sample" (ESTIMATES)


NEEDS_TEXT = {
    "linear": "a linear operator",
    "svd": "a linear operator with an SVD or an exact pseudo-inverse",
    "latent": "a latent prior (autoencoder + latent UNet)",
    "pixel": "a pixel-space prior",
}


class Solver:
    """Base class. Subclasses set ``name``, ``needs``, ``defaults`` and ``presets`` and implement ``sample``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    #: parameters and their defaults (the official code's where there is one)
    defaults: ClassVar[dict[str, Any]] = {}
    #: named parameter sets; each may hold "description"
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    stochastic: ClassVar[bool] = True
    #: the parameter that --steps sets
    steps_param: ClassVar[str] = "steps"
    #: what values parameters may take (``Rule``), checked when the solver is made
    rules: ClassVar[dict[str, Rule]] = {}

    def __init__(self, preset: str | None = None, **overrides: Any):
        params = dict(self.defaults)
        if preset:
            if preset not in self.presets:
                known = ", ".join(sorted(self.presets)) or "none"
                raise SolverError(f"solver '{self.name}' has no preset '{preset}'; its presets are: {known}.")
            params.update({k: v for k, v in self.presets[preset].items() if k != "description"})
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in self.defaults:
                raise SolverError(f"solver '{self.name}' has no parameter '{key}'; its parameters are: "
                                  f"{', '.join(self.defaults)}.")
            params[key] = _cast(key, value, self.defaults[key], self.name)
        for key, rule in self.rules.items():
            if not rule.allows(params[key]):
                raise SolverError(f"solver '{self.name}' parameter '{key}' must be {rule.text()}, got "
                                  f"{params[key]!r}.")
        self.preset = preset or ""
        self.params = params
        #: values a solver derives while sampling (e.g. DAPS's ``tau_used``): ``solve()`` adds them to Result.params
        self.reported: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------------------------
    def check(self, op: Operator, prior) -> None:
        """Refuse impossible combinations before any work, with one sentence naming the fix."""
        latent = bool(getattr(prior.card, "latent", False))
        problems = []
        if "linear" in self.needs and not op.linear:
            problems.append("linear")
        if "svd" in self.needs and not (op.linear and (getattr(op, "has_svd", False) or _has_exact_pinv(op))):
            problems.append("svd")
        if "latent" in self.needs and not latent:
            problems.append("latent")
        if "pixel" in self.needs and latent:
            problems.append("pixel")
        if problems:
            need = " and ".join(NEEDS_TEXT[p] for p in problems)
            raise SolverError(f"solver '{self.name}' needs {need}, but got operator '{op.spec.family}' with prior "
                              f"'{prior.card.name}'; {self._alternative(problems)}")
        if prior.card.channels != op.image_shape[0]:  # a latent prior's card gives its decoded images' channels
            raise SolverError(f"prior '{prior.card.name}' {'decodes' if latent else 'makes'} "
                              f"{prior.card.channels}-channel images but the operator is for {op.image_shape[0]}-"
                              f"channel images; use a prior for this kind of image.")

    def auto_preset(self, op: Operator, prior=None) -> str | None:
        """The preset for this operator's task when the solver has one (e.g. DPS's per-task step sizes), else
        "default" when it exists, else None (the defaults)."""
        task = task_of(op.spec)
        if task in self.presets:
            return task
        return "default" if "default" in self.presets else None

    def _alternative(self, problems: list[str]) -> str:
        if "latent" in problems:
            return "use a latent prior such as faces64-latent, or a pixel solver (dps, daps, ddnm, reddiff)."
        if "pixel" in problems:
            return "use a pixel prior, or a solver that handles latent priors (resample, daps)."
        return "use dps or daps, which need only a differentiable operator."

    def params_for(self, op: Operator, prior=None) -> dict[str, Any]:
        """The parameters ``sample`` uses on this operator (DAPS-1K/DAPS-100 take the task's official Langevin
        settings at sampling time); by default the parameters as set."""
        return dict(self.params)

    def sample(self, y: Tensor, op: Operator, prior, rng: Sequence[torch.Generator],
               progress: Progress | None = None) -> Tensor:
        raise NotImplementedError


def _cast(key: str, value: Any, default: Any, solver: str) -> Any:
    """A parameter override as the type of its default (strings from the command line included)."""
    if default is None:
        return value
    try:
        if isinstance(default, bool) and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, str):
            return int(float(value)) if float(value).is_integer() else int(value)
        return type(default)(value)
    except (TypeError, ValueError):
        raise SolverError(f"solver '{solver}' parameter '{key}' takes a value like {default!r} "
                          f"({type(default).__name__}), got '{value}'.") from None


def task_of(spec) -> str:
    """The task name of an operator spec, as solver presets name them: sr4, deblur-gauss, deblur-motion,
    inpaint-box, inpaint-random, phase-retrieval, hdr, mri, ct, denoise."""
    family = spec.family
    if family == "sr":
        return f"sr{spec['factor']}"
    if family == "blur":
        return {"gaussian": "deblur-gauss", "motion": "deblur-motion"}.get(spec["kind"], "deblur")
    if family == "mask":
        return "inpaint-box" if spec["kind"] == "box" else "inpaint-random"
    return {"phase": "phase-retrieval"}.get(family, family)


def _has_exact_pinv(op: Operator) -> bool:
    return bool(getattr(op, "exact_pinv", False))


# ------------------------------------------------------------------------------------------------------------------
# helpers for solver code


def to01(x: Tensor) -> Tensor:
    return (x + 1) / 2


def to_pm1(x: Tensor) -> Tensor:
    return x * 2 - 1


def randn_like_per_image(x: Tensor, rng: Sequence[torch.Generator]) -> Tensor:
    """Standard normal noise shaped like x, image i drawn from rng[i]: ``ImageGenerators.randn_like`` for a plain
    list of generators (solvers call ``rng.randn_like(x)``)."""
    return ImageGenerators.randn_like(rng, x)


def real_part(x: Tensor) -> Tensor:
    """The real part where an operator's V or A⁺ returns complex images (MRI with ``complex=true``): the prior's images
    are real, so a correction through them is projected onto real images."""
    return x.real if x.is_complex() else x


def spectrum(op, rcond: float) -> tuple[Tensor, Tensor, Tensor]:
    """(s, keep, 1/s): A's singular values, the modes kept (s > rcond·max s per image; the others count as null
    space, like the operators' truncated A⁺) and their inverses (0 off ``keep``), broadcastable to op.Vt's output."""
    s = op.singulars()
    smax = s.reshape(s.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (s.dim() - 1)))
    keep = s > rcond * smax
    return s, keep, torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))


def data_prox(y: Tensor, op, rcond: float) -> Callable[[Tensor, float], Tensor]:
    """x₀, ρ ↦ argmin_x ‖y − A x‖² + ρ‖x − x₀‖² on [0, 1] images: the data step of the half-quadratic-splitting
    solvers (DiffPIR, DPIR). In closed form where A has an SVD (per mode (s Uᵀy + ρ Vᵀx₀)/(s² + ρ); the modes
    below ``rcond`` and the null space keep x₀); otherwise x₀ + argmin_d ‖A d − (y − A x₀)‖² + ρ‖d‖² by conjugate
    gradients (CT, motion blur with reflecting boundaries)."""
    if getattr(op, "has_svd", False):
        s, keep, _ = spectrum(op, rcond)
        s_uy = op.Ut(y) * s

        def svd_step(x0: Tensor, rho: float) -> Tensor:
            c = op.Vt(x0)
            return real_part(op.V(torch.where(keep, (s_uy + rho * c) / (s * s + rho), c)))

        return svd_step

    def cg_step(x0: Tensor, rho: float) -> Tensor:
        return x0 + real_part(op.least_squares(y - op.A(x0), damping=rho))

    return cg_step


def latent_shape(op, prior, device) -> tuple[int, ...]:
    """The shape of one image's latents for a latent prior (from the prior, or by encoding a zero image)."""
    if hasattr(prior, "latent_shape"):
        return tuple(prior.latent_shape(tuple(op.image_shape[1:])))
    with torch.no_grad():
        return tuple(prior.encode(torch.zeros((1, *op.image_shape), device=device)).shape[1:])


def measurement_pm1(y: Tensor, op) -> Tensor:
    """The measurement in the official [-1, 1] variables for a linear operator: ỹ = 2y − A(1), so that
    A(x₋₁) − ỹ = 2(A((x₋₁+1)/2) − y)."""
    with torch.no_grad():
        return 2 * y - op.A(torch.ones((y.shape[0], *op.image_shape), device=y.device))


def batch_norm(v: Tensor) -> Tensor:
    """Per-image L2 norm (real inner product), shaped (B,)."""
    v = torch.view_as_real(v) if v.is_complex() else v
    return v.reshape(v.shape[0], -1).norm(dim=1)


#: an operator whose ‖AᵀA‖ exceeds this (CT's Radon transform: thousands) is normalised by the solvers whose step
#: sizes assume a unit-scale operator (normalise="auto"); every task with official settings stays below it
#: (masks 1, blurs ≤ 1, SR ×4 1/16, orthonormal MRI 1)
GAIN_LIMIT = 4.0
NORMALISE = ("auto", "on", "off")


@torch.no_grad()
def operator_gain(op, batch: int, device, iterations: int = 30) -> Tensor:
    """‖AᵀA‖ per image (its largest eigenvalue), by power iteration from the same start for every image (so the
    value does not depend on the batch), shaped (B,)."""
    v = torch.randn(tuple(op.image_shape), generator=torch.Generator().manual_seed(0))
    v = v.to(device).expand(batch, *v.shape).contiguous()
    gain = torch.ones(batch, device=device)
    for _ in range(iterations):
        w = op.A_adjoint(op.A(v))
        w = w.real if w.is_complex() else w
        gain = w.reshape(batch, -1).norm(dim=1).clamp_min(1e-30)
        v = w / gain.view(-1, *([1] * (w.dim() - 1)))
    return gain


def data_term_scale(op, batch: int, device, mode: str = "auto") -> Tensor:
    """1/‖AᵀA‖ per image, shaped (B, 1, 1, 1), for solving with the normalised operator A/‖A‖ (and y/‖A‖): a squared
    data term ‖A x − y‖² scales by it, a plain norm ‖A x − y‖ by its square root. ``mode`` "auto": only for linear
    operators with ‖AᵀA‖ > GAIN_LIMIT (CT), so the official tasks keep the official step sizes exactly; "on": every
    linear operator; "off": never (ones)."""
    if mode not in NORMALISE:
        raise SolverError(f"normalise must be one of {', '.join(NORMALISE)}, got '{mode}'.")
    ones = torch.ones(batch, 1, 1, 1, device=device)
    if mode == "off" or not op.linear:
        return ones
    if getattr(op, "has_svd", False):  # the spectrum is known: no operator evaluations
        sv = op.singulars().to(device).abs()
        sv = sv.reshape(sv.shape[0], -1).amax(dim=1) if sv.dim() > 1 and sv.shape[0] in (1, batch) else sv.max()
        gain = (sv.float() ** 2).reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)
    else:
        gain = operator_gain(op, batch, device).view(-1, 1, 1, 1)
    return torch.where(gain > GAIN_LIMIT, 1 / gain, ones) if mode == "auto" else 1 / gain


def noise_sigma(measurement_noise) -> float:
    """σ_y on [0, 1] of a ``operators.Noise`` (0 for none / Poisson)."""
    return float(getattr(measurement_noise, "std", measurement_noise or 0.0))


# ------------------------------------------------------------------------------------------------------------------
# counting wrappers


class CountingOperator:
    """Delegates to an operator and counts the evaluations a solver makes."""

    COUNTED = {"A", "A_adjoint", "A_pinv", "Vt", "V", "Ut", "U", "least_squares", "svd_pinv"}

    def __init__(self, op: Operator):
        self._op = op
        self.count = 0

    def __getattr__(self, name):
        attr = getattr(self._op, name)
        if name in self.COUNTED and callable(attr):
            def counted(*args, **kwargs):
                self.count += 1
                return attr(*args, **kwargs)
            return counted
        return attr


class _NetCounter:
    """Network evaluations during a solve: the prior's own count of evaluations (``DiffusionPrior.evaluations``, one
    per batch however many tiles a large image takes), or else the calls of its network's forward."""

    def __init__(self, prior):
        self.prior = prior
        self.start = getattr(prior, "evaluations", None)
        self.handle, self._calls = None, 0
        net = getattr(prior, "net", None)
        if not isinstance(self.start, int) and isinstance(net, torch.nn.Module):
            self.handle = net.register_forward_hook(self._hook)

    @property
    def calls(self) -> int:
        return self.prior.evaluations - self.start if isinstance(self.start, int) else self._calls

    def _hook(self, module, inputs, output):
        self._calls += 1

    def remove(self):
        if self.handle is not None:
            self.handle.remove()


# ------------------------------------------------------------------------------------------------------------------

#: how K posterior samples become one image: their mean (the Monte-Carlo posterior mean m_K: for an exact sampler
#: E‖m_K − x‖² = (1 + 1/K) tr Σ_post, about half a single sample's 2 tr Σ_post), their per-pixel median, or the first
#: sample (seed index 0: the image a K = 1 run gives)
ESTIMATES = ("mean", "median", "sample")


def check_estimate(estimate: str) -> None:
    if estimate not in ESTIMATES:
        raise SolverError(f"--estimate must be one of {', '.join(ESTIMATES)}, got '{estimate}'.")


def combine(draws: Tensor, estimate: str = "mean") -> Tensor:
    """One image from K samples stacked on dim 0 (``ESTIMATES``); K = 1 gives the sample itself, bit for bit."""
    check_estimate(estimate)
    if estimate == "sample":
        return draws[0].clone()
    if estimate == "median":  # the middle value per pixel; the mean of the two middle ones for even K
        ordered = draws.sort(dim=0).values
        k = ordered.shape[0]
        return (ordered[(k - 1) // 2] + ordered[k // 2]) / 2
    return draws.mean(0)


def solve(solver: Solver, y: Tensor, op: Operator, prior, seeds: Sequence[int], noise=None, samples: int = 1,
          progress: Progress | None = None, estimate: str = "mean") -> Result:
    """Run ``solver`` on a batch of measurements ``y`` (image i seeded by ``seeds[i]``).

    With ``samples`` = K > 1 the solver runs K times with independent streams (sample k from the streams
    ``solver/NAME/k``, so sample 0 is the K = 1 result) and the result holds their ``estimate`` (mean, median or
    sample, see ``ESTIMATES``) and the per-pixel standard deviation over all K. A deterministic solver
    (``stochastic = False``) runs once: its K samples would be identical. Images whose estimate is not finite are
    reported in ``failed`` (their output is zeros) instead of being returned as garbage."""
    if len(seeds) != y.shape[0]:
        raise SolverError(f"got {len(seeds)} seeds for a batch of {y.shape[0]} measurements.")
    if samples < 1:
        raise SolverError(f"--samples must be at least 1, got {samples}.")
    check_estimate(estimate)
    if not solver.stochastic:
        samples = 1
    solver.check(op, prior)
    solver.noise = noise_sigma(noise)
    solver.reported = {}
    counting = CountingOperator(op)
    counter = _NetCounter(prior)
    if torch.cuda.is_available() and y.is_cuda:
        torch.cuda.reset_peak_memory_stats(y.device)
    start = time.perf_counter()
    draws = []
    try:
        for k in range(samples):
            rng = generators(seeds, f"solver/{solver.name}/{k}")
            steps_done = (lambda i, n, k=k: progress(k * n + i, samples * n)) if progress else None
            with torch.no_grad() if not solver_needs_grad(solver) else torch.enable_grad():
                x = solver.sample(y, counting, prior, rng, steps_done)
            draws.append(to01(x.detach().float()).clamp(0, 1) if x.is_floating_point() else x.detach())
    finally:
        counter.remove()
    seconds = time.perf_counter() - start
    stack = torch.stack(draws)
    x = combine(stack, estimate)
    std = stack.std(0, unbiased=True) if samples > 1 else None
    failed: list[str | None] = []
    for i in range(x.shape[0]):
        finite = bool(torch.isfinite(stack[:, i]).all())
        failed.append(None if finite else f"solver '{solver.name}' produced NaN/Inf for this image (a step size too "
                                          f"large for this prior or noise level); try another preset or more steps.")
        if not finite:
            x[i] = 0
            if std is not None:
                std[i] = 0
    cost = Cost(nfe=counter.calls, operator_evals=counting.count, seconds=seconds,
                peak_memory_mb=_peak_memory_mb(y))
    return Result(x=x, std=std, samples=samples, cost=cost, failed=failed,
                  params=dict(solver.params, preset=solver.preset, **solver.reported), estimate=estimate)


def solver_needs_grad(solver: Solver) -> bool:
    return bool(getattr(solver, "uses_grad", False))


def _peak_memory_mb(y: Tensor) -> float:
    if y.is_cuda:
        return torch.cuda.max_memory_allocated(y.device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # noqa: BLE001 - not available on every platform
        return math.nan
