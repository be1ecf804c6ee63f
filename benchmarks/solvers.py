"""Solver benchmark: every solver × task on the embedded priors and the test sets, beside the pinv baseline.

Quality. A fixed subset of a test folder (``--limit`` images at evenly spaced positions of its sorted file list) is
measured once per task with per-image seeds (operator draws and noise from ``restore.degrade.image_seed``, as
``restore bench`` does), then every solver that supports the task restores it through ``restore.solve.run`` (the
code path of ``restore solve``/``restore bench``): PSNR / SSIM on [0, 1], LPIPS (AlexNet, via
``restore.lpips_metric``; reported as unavailable when no weights are found), seconds per image and network
evaluations (NFE). Groups of runs:

* ``--prior`` (default ``faces64``) on ``--data`` (default ``../shared/data/test/faces64``): the pixel solvers
  (dps, ddnm, daps, reddiff) on ``--tasks``;
* ``--latent-prior`` (default ``faces64-latent``) on the same images: ReSample and latent DAPS;
* ``--mri-prior`` (``brain-mri``) on ``../shared/data/test/brain_mri128``: mri-4x, mri-8x;
* ``--ct-prior`` (``ct``) on ``../shared/data/test/ct_dicom``: sparse-view CT with 60 views.
A group whose prior or data is not available is skipped with the reason printed; so is a solver × task that the
solver refuses (e.g. DDNM on CT, which has no SVD), with the solver's own sentence.

Speed.
1. Solver overhead = wall time of a solver run ÷ (its NFE × the time of one bare network evaluation at the same
   batch), where the bare evaluation includes the backward pass to the input for the evaluations a solver
   backpropagates through (all of DPS's; ReSample's guided DDIM steps). The bare evaluation is timed (median of
   ``--bare-repeats`` calls and ``--bare-seconds``, after a warm-up) right before each batch that a solver runs, on
   the very prior instance it runs, and again right after it (the mean of the two is used; their ratio flags a
   machine whose speed drifted). For latent priors the decoder/encoder passes are counted and timed too, and a
   second overhead counts them as network work. Target ≤ 1.10.
2. Batch throughput: images per second at batch 1, 4 and 16 (``--batch-sizes``) for each solver, on one task
   (``--throughput-task``, sr4) with the chosen presets and ``--throughput-steps`` steps (DAPS: annealing levels).
3. GPU (only when CUDA is available): each solver's paper preset for sr4 on the FFHQ-256 architecture
   (``priors.configs.ADM_CONFIGS['ffhq_10m']``, random weights) at batch 1 and 8; two short runs (``--gpu-steps``)
   give time = setup + per-step × steps, extrapolated to the preset's full step count; peak CUDA memory.
4. Scale (``--sections scale``, not in the default: minutes per solver on a CPU): the overhead of 1. on the
   FFHQ-256 architecture (random weights; one input channel for MRI/CT) on ``--device``, for each pixel solver's
   chosen preset on ``--scale-tasks`` (default deblur-motion, ct-sparse60, sr4): two short runs (``--scale-steps``)
   give setup + per-step time, extrapolated to the preset's full steps and divided by the full run's network time.
   On the small embedded priors an operator without an SVD costs more than the network (DAPS's Langevin steps call
   A and Aᵀ 100 times per level); this shows what the same solver code costs beside a network of the papers' size.

Usage::

    .venv/bin/python benchmarks/solvers.py                                    # everything, fast presets
    .venv/bin/python benchmarks/solvers.py --limit 16 --presets fast \\
        --lpips-weights ../shared/data/lpips/lpips_alex_v0.1.safetensors --markdown docs/benchmarks.md \\
        --json out/bench-solvers/summary.json
    .venv/bin/python benchmarks/solvers.py --prior /tmp/p/cpu64.safetensors --limit 2 --tasks sr4,inpaint-random \\
        --solvers ddnm,dps --steps-override 5                                 # a smoke run
    .venv/bin/python benchmarks/solvers.py --presets paper                    # the official presets (slow on a CPU)
    .venv/bin/python benchmarks/solvers.py --presets fast,daps=sr4,dps=default  # a mapping on top of a base

``--presets``: comma-separated; ``fast`` (dps fast, ddnm default, daps daps-100, reddiff fast, resample fast,
latent DAPS its LatentDAPS-100 task preset), ``paper`` (each solver's preset for the task, as ``restore solve``
chooses it: DPS's per-task ζ, DDNM default, DAPS-1K with the task's official settings, RED-Diff default, ReSample
default), and ``SOLVER=PRESET`` items (PRESET may be ``fast`` or ``paper``). Solvers not named get ``paper``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import operators  # noqa: E402
from operators import Noise, OperatorError  # noqa: E402
from restore.bench import COLUMNS, summarise, write_report, write_results  # noqa: E402
from restore.degrade import degrade_one, image_seed  # noqa: E402
from restore.io import RestoreError, find_images, load_image, preview, save_image  # noqa: E402
from restore.solve import Job, _make_solver, fit_job, run  # noqa: E402
from restore.solvers import SOLVERS, SolverError, get_solver, solve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RESTORE_SHARED_DATA") or ROOT.parent / "shared" / "data")

#: task name → (operator spec, what it is). Names other than these may be any operator preset (``restore list
#: presets``); ``--task-spec NAME=SPEC`` adds others.
TASKS: dict[str, tuple[str, str]] = {
    "sr4": ("sr:factor=4,kernel=bicubic", "×4 super-resolution, MATLAB-style antialiased bicubic (DPS/DAPS Resizer); "
                                          "64×64 → 16×16"),
    "inpaint-box": ("mask:kind=box,size=32,margin=8",
                    "a 32×32 hole at a seeded random position at least 8 px from the border: DPS/DAPS's 128×128 hole "
                    "in a 256×256 image (half the side) with DAPS's margin 32, scaled to 64×64 (the operator preset "
                    "inpaint-box, 128×128, does not fit 64×64)"),
    "inpaint-random": ("mask:kind=random,fraction=0.7",
                       "random inpainting, 70% of the pixels missing (DAPS, ReSample)"),
    "deblur-gauss": ("blur:kind=gaussian,size=61,std=3.0",
                     "the DPS/DAPS Gaussian kernel (61×61, σ = 3 px, reflect boundary) unchanged in pixels: on 64×64 "
                     "faces it removes far more of the face than on 256×256 ones"),
    "deblur-motion": ("blur:kind=motion,size=61,intensity=0.5",
                      "the DPS/DAPS motion kernel (61×61, intensity 0.5, one seeded kernel per image), unchanged in "
                      "pixels"),
    "mri-4x": ("mri:accel=4,center=0.08,pattern=random", "single-coil MRI, 4× random columns, 8% centre (fastMRI)"),
    "mri-8x": ("mri:accel=8,center=0.04,pattern=random", "single-coil MRI, 8× random columns, 4% centre (fastMRI)"),
    "ct-sparse60": ("ct:views=60", "sparse-view parallel-beam CT, 60 views over 180°"),
}
DEFAULT_TASKS = ["sr4", "inpaint-box", "inpaint-random", "deblur-gauss", "deblur-motion"]
PIXEL_SOLVERS = ["dps", "ddnm", "daps", "reddiff"]
#: labels of the solvers that run on the latent prior → the solver they run
LATENT_LABELS = {"resample": "resample", "latent-daps": "daps"}
#: the "fast" choice per solver label (None: the solver's own choice for the task, here LatentDAPS-100)
FAST = {"dps": "fast", "ddnm": "default", "daps": "daps-100", "reddiff": "fast", "resample": "fast",
        "latent-daps": None}
#: solvers that backpropagate through the network: "all" its evaluations, or "guided" (ReSample's DDIM steps)
BACKPROP = {"dps": "all", "resample": "guided"}
OVERHEAD_TARGET = 1.10
BEGIN = "<!-- BEGIN solver benchmark results: written by benchmarks/solvers.py --markdown; do not edit by hand -->"
END = "<!-- END solver benchmark results -->"
PRESETS_BEGIN = "<!-- BEGIN preset table: written by benchmarks/solvers.py from the solver classes; do not edit by hand -->"
PRESETS_END = "<!-- END preset table -->"
#: the parameters the preset table quotes for each solver (their values always come from the solver classes)
HEADLINE = {
    "dps": ("steps", "scale"),
    "ddnm": ("steps", "eta", "sigma_y"),
    "daps": ("annealing_steps", "ode_steps", "mcmc", "mcmc_steps", "lr", "momentum", "likelihood", "tau"),
    "reddiff": ("steps", "lr", "grad_term_weight"),
    "resample": ("steps", "pixel_iters", "latent_iters", "noise_stop"),
}


# ---------------------------------------------------------------------------------------------------------------------
# options


def split_list(text: str) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def solver_of(label: str) -> str:
    return LATENT_LABELS.get(label, label)


def parse_presets(text: str) -> dict[str, str | None]:
    """``fast`` / ``paper`` / ``SOLVER=PRESET`` items → {solver label: preset, or None for the paper (task) choice}.
    Labels not mentioned get None (paper)."""
    chosen: dict[str, str | None] = {label: None for label in FAST}
    for item in split_list(text):
        if "=" not in item:
            if item == "fast":
                chosen.update(FAST)
            elif item == "paper":
                chosen = {label: None for label in FAST}
            else:
                raise SystemExit(f"--presets: '{item}' is neither fast, paper nor SOLVER=PRESET.")
            continue
        label, preset = (s.strip() for s in item.split("=", 1))
        if label not in FAST:
            raise SystemExit(f"--presets: unknown solver '{label}'; use one of {', '.join(FAST)}.")
        if preset == "fast":
            chosen[label] = FAST[label]
        elif preset in ("paper", "auto", ""):
            chosen[label] = None
        else:
            known = SOLVERS[solver_of(label)].presets
            if preset not in known:
                raise SystemExit(f"--presets: solver '{solver_of(label)}' has no preset '{preset}'; its presets are: "
                                 f"{', '.join(sorted(known))}.")
            chosen[label] = preset
    return chosen


def _shown_value(solver: str, key: str, value) -> str:
    if solver == "ddnm" and key == "sigma_y" and value < 0:
        return "the measurement's"
    return f"{value:g}" if isinstance(value, float) else str(value)


@functools.lru_cache(maxsize=None)
def _face_op(task: str):
    """The operator of a face task at 64×64 (one seeded parameter set): what a preset is chosen for."""
    return operators.build(task_spec(task, {}), (3, 64, 64), seeds=[0])


def preset_cell(label: str, preset: str | None, tasks: list[str] | None = None) -> str:
    """What a solver label runs on the face tasks with ``preset`` (None: the preset ``restore solve`` picks for each
    task): the preset name(s) and the HEADLINE parameters as the solver will use them (``params_for``: DAPS-100/1K
    take the task's official Langevin settings); a value that differs between tasks is listed per task."""
    import types

    name = solver_of(label)
    prior = types.SimpleNamespace(card=types.SimpleNamespace(latent=label in LATENT_LABELS))
    tasks = tasks or DEFAULT_TASKS
    chosen, shown = {}, {}
    for task in tasks:
        op = _face_op(task)
        chosen[task] = preset or get_solver(name).auto_preset(op, prior) or ""
        params = get_solver(name, preset=chosen[task] or None).params_for(op, prior)
        shown[task] = {k: _shown_value(name, k, params[k]) for k in HEADLINE[name]
                       if k in params and (k != "momentum" or params.get("mcmc") == "hmc")}
    names = sorted({p for task, p in chosen.items() if p not in (task, f"latent-{task}")})
    head = "/".join(f"`{p}`" for p in names) if names else "the task's preset"
    keys = list(dict.fromkeys(k for task in tasks for k in shown[task]))
    same = [k for k in keys if len({shown[task].get(k) for task in tasks}) == 1]
    parts = [", ".join(f"{k}={shown[tasks[0]][k]}" for k in same)]
    for k in keys:
        if k not in same:
            by_value: dict[str, list[str]] = {}
            for task in tasks:
                by_value.setdefault(shown[task].get(k, "–"), []).append(task)
            parts.append(f"{k}: " + ", ".join(f"{v} ({', '.join(ts)})" for v, ts in by_value.items()))
    return f"{head}: " + "; ".join(p for p in parts if p)


def presets_markdown() -> str:
    """The preset table of docs/benchmarks.md and docs/benchmarks-paper.md, from the solver classes' presets."""
    lines = ["| solver | fast (`--presets fast`) | paper (`--presets paper`: what `restore solve` picks for the task) |",
             "|---|---|---|"]
    for label, fast in FAST.items():
        shown = "latent DAPS" if label == "latent-daps" else label
        lines.append(f"| {shown} | {preset_cell(label, fast)} | {preset_cell(label, None)} |")
    return "\n".join(lines) + "\n"


def update_presets(path: Path, text: str | None = None) -> bool:
    """Replace the preset table between its markers in ``path``; False when the file has no markers."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    if not (PRESETS_BEGIN in old and PRESETS_END in old and old.index(PRESETS_BEGIN) < old.index(PRESETS_END)):
        return False
    block = f"{PRESETS_BEGIN}\n\n{text or presets_markdown()}\n{PRESETS_END}"
    new = old[:old.index(PRESETS_BEGIN)] + block + old[old.index(PRESETS_END) + len(PRESETS_END):]
    if new != old:
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(new)
        os.replace(tmp, path)
    return True


def task_spec(name: str, extra: dict[str, str]) -> str:
    if name in extra:
        return str(operators.parse(extra[name]))
    if name in TASKS:
        return TASKS[name][0]
    if name in operators.PRESETS:
        return str(operators.parse(name))
    raise SystemExit(f"unknown task '{name}'; use one of {', '.join(TASKS)}, an operator preset ('restore list "
                     f"presets'), or define it with --task-spec NAME=SPEC.")


def select_images(folder: Path, limit: int) -> list[Path]:
    """``limit`` images at evenly spaced positions of the folder's sorted file list (all of them for limit 0):
    a fixed subset that spans the folder rather than its first files."""
    files = [p for p, _ in find_images([str(folder)]) if p.suffix.lower() != ".npz"]
    if limit and limit < len(files):
        files = [files[i * len(files) // limit] for i in range(limit)]
    return files


# ---------------------------------------------------------------------------------------------------------------------
# groups, images, jobs


@dataclasses.dataclass
class Group:
    key: str                     # faces | latent | mri | ct
    prior: str                   # name or path given to priors.resolve
    data: Path
    tasks: list[str]
    labels: list[str]            # solver labels (latent-daps runs daps)
    prior_obj: Any = None
    skip: str = ""               # why the whole group is skipped
    images: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Image:
    path: Path
    rel: str
    x: torch.Tensor              # (C, H, W) on [0, 1], at the prior's size
    reference_path: str          # a file PIL can open (the original, or a PNG of the prepared image)


def prepare_group(group: Group, limit: int, device: str, out: Path) -> None:
    """Resolve the prior and read the images; on any problem set ``group.skip`` to the reason."""
    import priors
    from priors.base import PriorError

    if group.prior.lower() in ("", "none"):
        group.skip = "disabled (prior 'none')"
        return
    try:
        group.prior_obj = priors.resolve(group.prior, device=device).eval()
    except (PriorError, RestoreError, OSError) as exc:
        group.skip = f"prior '{group.prior}' is not available: {exc}"
        return
    card = group.prior_obj.card
    if group.key == "latent" and not card.latent:
        group.skip = f"prior '{group.prior}' is a pixel prior; ReSample and latent DAPS need a latent one"
        return
    if card.latent and getattr(group.prior_obj, "_bench_ae_counter", None) is None:
        group.prior_obj._bench_ae_counter = AutoencoderCounter(group.prior_obj)
    if not group.data.is_dir():
        group.skip = f"the test folder '{group.data}' does not exist"
        return
    try:
        group.images = load_images(group.data, group.prior_obj.card, limit, out / group.key / "references")
    except RestoreError as exc:
        group.skip = f"cannot read the test images of '{group.data}': {exc}"


def load_images(folder: Path, card, limit: int, ref_dir: Path) -> list[Image]:
    """The evenly spaced subset of ``folder`` on [0, 1] at the prior's size: DICOM through restore's reader with the
    HU window of the prior's ``value_map`` when it has one, other sizes resized (antialiased bicubic). Images that
    were resized, or that PIL cannot show, get a PNG copy under ``ref_dir`` for the report's grids."""
    value_map = str(card.extra.get("value_map") or "")
    window = value_map[3:] if value_map.startswith("hu:") else None
    size = card.image_size or None  # a convolutional prior too: its native size is the scale it was trained at
    images = []
    for path in select_images(folder, limit):
        x = load_image(path, hu_window=window) if window else load_image(path)
        rel = path.relative_to(folder).as_posix()
        ref = str(path)
        resize = bool(size) and tuple(x.shape[1:]) != (size, size)
        if resize:
            x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True,
                                                align_corners=False)[0].clamp(0, 1)
        if resize or path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            ref_png = ref_dir / Path(rel).with_suffix(".png")
            save_image(ref_png, x)
            ref = str(ref_png)
        images.append(Image(path, rel, x, ref))
    return images


def make_jobs(images: list[Image], spec: str, noise: Noise, seed: int, task_dir: Path) -> list[Job]:
    """Measure each image once (seeded by its relative name, as ``restore bench``) and save a preview."""
    jobs = []
    for img in images:
        s = image_seed(seed, img.rel)
        m = degrade_one(img.x, spec, noise, s, source=str(img.path.resolve()))
        save_image(task_dir / "measurements" / Path(img.rel).with_suffix(".png"), preview(m.y[0]))
        jobs.append(Job(img.path, Path(img.rel), m, reference=img.x, reference_path=img.reference_path))
    return jobs


# ---------------------------------------------------------------------------------------------------------------------
# one instance per prior


class SharedPriors:
    """While active, ``priors.resolve`` returns one instance per (prior, device): ``restore.solve.run`` (called once
    per batch here) then uses the very network whose bare evaluations are timed, and the prior loads once."""

    def __init__(self):
        self.cache: dict[tuple[str, str], Any] = {}
        self._original = None

    def __enter__(self):
        import priors

        self._original = original = priors.resolve

        def resolve(name_or_path, device="cpu"):
            key = (str(name_or_path), str(device))
            if key not in self.cache:
                self.cache[key] = original(name_or_path, device=device).eval()
            return self.cache[key]

        priors.resolve = resolve
        return self

    def __exit__(self, *exc):
        import priors

        priors.resolve = self._original
        return False


class AutoencoderCounter:
    """Counts a latent prior's decoder passes (``graph``: the output carries an autograd graph, so a backward pass
    follows in the solvers here) and encoder passes, by wrapping the instance's ``decode``/``encode``."""

    def __init__(self, prior):
        self.decode, self.encode = prior.decode, prior.encode    # the unwrapped methods, for the bare timings
        self.reset()

        def decode(z):
            out = self.decode(z)
            if out.requires_grad:
                self.dec_graph += 1
            else:
                self.dec += 1
            return out

        def encode(x):
            self.enc += 1
            return self.encode(x)

        prior.decode, prior.encode = decode, encode

    def reset(self) -> None:
        self.dec = self.dec_graph = self.enc = 0


# ---------------------------------------------------------------------------------------------------------------------
# timing helpers


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def state_shape(prior, image_shape) -> tuple[int, ...]:
    """The shape of one image's diffusion state: the image, or its latent."""
    if not getattr(prior.card, "latent", False):
        return (prior.card.channels, *image_shape[1:])
    if hasattr(prior, "latent_shape"):
        return tuple(prior.latent_shape(tuple(image_shape[1:])))
    with torch.no_grad():
        return tuple(prior.encode(torch.zeros((1, *image_shape))).shape[1:])


def bare_eval_times(prior, shape, batch: int, repeats: int, backprop: bool, min_seconds: float = 0.0) -> dict:
    """Median seconds of one bare network evaluation on a batch (after a warm-up call), and of one evaluation with
    the backward pass to the input when ``backprop``: at least ``repeats`` calls and ``min_seconds`` of them."""
    device = prior.alphas_cumprod.device
    g = torch.Generator().manual_seed(1234)
    x = torch.randn((batch, *shape), generator=g).to(device)
    t = torch.full((batch,), 500.0, device=device)

    def fwd():
        with torch.no_grad():
            prior.model_output(x, t)

    def fwd_bwd():
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            eps, _ = prior.model_output(xx, t)
            torch.autograd.grad(eps.sum(), xx)

    out = {"fwd": _median_time(fwd, repeats, device, min_seconds), "fwd_bwd": None}
    if backprop:
        out["fwd_bwd"] = _median_time(fwd_bwd, repeats, device, min_seconds)
    return out


def _median_time(fn, repeats: int, device, min_seconds: float = 0.0) -> float:
    fn()
    _sync(device)
    times: list[float] = []
    while len(times) < max(1, repeats) or sum(times) < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bare_autoencoder_times(counter: AutoencoderCounter, latent_shape, image_shape, batch: int, repeats: int,
                           min_seconds: float, device) -> dict:
    """Median seconds of one decoder pass without and with the backward pass to the latent, and of one encoder
    pass, on a batch."""
    g = torch.Generator().manual_seed(4321)
    z = torch.randn((batch, *latent_shape), generator=g).to(device)
    x = (torch.rand((batch, *image_shape), generator=g) * 2 - 1).to(device)

    def dec():
        with torch.no_grad():
            counter.decode(z)

    def dec_bwd():
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            torch.autograd.grad(counter.decode(zz).sum(), zz)

    def enc():
        with torch.no_grad():
            counter.encode(x)

    return {"dec": _median_time(dec, repeats, device, min_seconds),
            "dec_bwd": _median_time(dec_bwd, repeats, device, min_seconds),
            "enc": _median_time(enc, repeats, device, min_seconds)}


def mean_bare(before: dict, after: dict) -> dict:
    """The bare evaluation times used for a run: the mean of those timed right before and right after it."""
    return {k: (before[k] + after[k]) / 2 if before[k] else None for k in before}


def network_seconds(bare: dict, nfe: float, n_bwd: float) -> float:
    """Seconds of a run's network work: its forward-only evaluations plus those it backpropagates through."""
    return (nfe - n_bwd) * bare["fwd"] + n_bwd * (bare["fwd_bwd"] or 0.0)


def backprop_evals(label: str, solver, prior, nfe: int) -> int:
    """How many of a run's network evaluations backpropagate through the network."""
    kind = BACKPROP.get(solver_of(label))
    if kind == "all":
        return nfe
    if kind == "guided":
        from restore.solvers.resample import ddim_timesteps

        return min(nfe, len(ddim_timesteps(prior.T, int(solver.params["steps"]))))
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# quality (+ overhead)


@dataclasses.dataclass
class Context:
    out: Path
    noise: Noise
    seed: int
    batch_size: int
    steps: int | None
    presets: dict[str, str | None]
    device: str
    lpips_weights: str | None
    resume: bool
    bare_repeats: int
    bare_seconds: float = 0.5
    log: Any = print
    extra_tasks: dict = dataclasses.field(default_factory=dict)   # --task-spec NAME=SPEC
    params: dict = dataclasses.field(default_factory=dict)        # --param SOLVER:KEY=VALUE → {label: {key: value}}
    label_suffix: str = ""                                         # --label-suffix: appended to the solvers' labels

    def shown(self, label: str) -> str:
        """The label a solver's rows carry (pinv keeps its own)."""
        return label if label == "pinv" else label + self.label_suffix


def check_support(label: str, preset: str | None, steps: int | None, job: Job, prior, params: dict | None = None):
    """The solver as ``run`` would build it for this task, or the sentence saying why it cannot run."""
    name = solver_of(label)
    op = job.m.operator()
    try:
        solver = _make_solver(name, preset, steps, op, prior, params)
        fit_job(job, prior.card, None, name)
        solver.check(op, prior)
    except (SolverError, RestoreError, OperatorError) as exc:
        return None, str(exc)
    return solver, ""


def _read_back(row: dict) -> dict:
    """A row for an output that a resumed run left in place, from its sidecar (as ``restore bench`` does)."""
    side = json.loads(Path(row["output"]).with_suffix(".json").read_text())
    return dict(row, status="written", preset=side["preset"], seconds=side["cost"]["seconds_per_image"],
                nfe=side["cost"]["nfe"], resumed=True, **side["metrics"])


def run_quality(groups: list[Group], ctx: Context) -> tuple[list[dict], list[dict], list[dict]]:
    """Every ready group × task × solver (+ pinv once per data set and task). Returns (rows, overhead, skipped)."""
    rows: list[dict] = []
    overhead: list[dict] = []
    skipped: list[dict] = []
    pinv_done: set = set()
    for group in groups:
        if group.skip:
            continue
        prior = group.prior_obj
        for task in group.tasks:
            spec = ctx_spec(ctx, task)
            task_dir = ctx.out / group.key / task
            jobs = make_jobs(group.images, spec, ctx.noise, ctx.seed, task_dir)
            base = dict(group=group.key, task=task, spec=spec)
            if (str(group.data), spec) not in pinv_done:
                pinv_done.add((str(group.data), spec))
                got = run(jobs, "pinv", group.prior, task_dir / "pinv", batch_size=len(jobs), device=ctx.device,
                          overwrite=not ctx.resume, lpips_weights=ctx.lpips_weights)
                for job, r in zip(jobs, got):
                    r = _read_back(r) if r["status"].startswith("exists") else r
                    rows.append(_row(r, base, job, "pinv", "", len(jobs), "–"))
            for label in group.labels:
                preset = ctx.presets.get(label)
                solver, why = check_support(label, preset, ctx.steps, jobs[0], prior, ctx.params.get(label))
                if solver is None:
                    skipped.append(dict(group=group.key, prior=group.prior, task=task, solver=ctx.shown(label),
                                        reason=why))
                    ctx.log(f"skipped {label} on {task} ({group.prior}): {why}")
                    continue
                folder = task_dir / (label + (f"-{solver.preset}" if solver.preset else "")
                                     + (f"-s{ctx.steps}" if ctx.steps else ""))
                done_rows: list[dict] = []
                try:
                    for start in range(0, len(jobs), ctx.batch_size):
                        chunk = jobs[start:start + ctx.batch_size]
                        got, record = run_timed(chunk, label, solver, group, folder, task, ctx)
                        done_rows += [_row(r, base, job, ctx.shown(label), r.get("preset") or solver.preset, len(chunk),
                                           prior.card.name) for job, r in zip(chunk, got)]
                        if record:
                            overhead.append(record)
                except Exception as exc:  # noqa: BLE001 - a crashing solver must not end a long benchmark run
                    why = f"crashed after {len(done_rows)} images: {type(exc).__name__}: {exc}"
                    skipped.append(dict(group=group.key, prior=group.prior, task=task, solver=ctx.shown(label),
                                        reason=why))
                    ctx.log(f"{label} on {task} ({group.prior}) {why}")
                rows += done_rows
                if done_rows:
                    sec = statistics.fmean(float(r["seconds"]) for r in done_rows)
                    ctx.log(f"{group.key:6s} {task:15s} {ctx.shown(label):12s} "
                            f"{done_rows[0]['preset'] or '(defaults)':16s} "
                            f"{len(done_rows)} images, {sec:.2f} s/img, NFE {done_rows[0]['nfe']}")
    return rows, overhead, skipped


def run_timed(chunk: list[Job], label: str, solver, group: Group, folder: Path, task: str,
              ctx: Context) -> tuple[list[dict], dict | None]:
    """One batch through ``restore.solve.run``, with the bare network (and, for latent priors, autoencoder)
    evaluations timed right before and again right after it. Returns (rows, overhead record or None when resumed)."""
    prior = group.prior_obj
    shape = state_shape(prior, job_shape(chunk[0]))
    backprop = solver_of(label) in BACKPROP
    counter = getattr(prior, "_bench_ae_counter", None)
    before = bare_eval_times(prior, shape, len(chunk), ctx.bare_repeats, backprop, ctx.bare_seconds)
    if counter is not None:
        counter.reset()
    got = run(chunk, solver_of(label), group.prior, folder, preset=ctx.presets.get(label), steps=ctx.steps,
              batch_size=len(chunk), device=ctx.device, overwrite=not ctx.resume, lpips_weights=ctx.lpips_weights,
              params=ctx.params.get(label))
    got = [_read_back(r) if r["status"].startswith("exists") else r for r in got]
    if any(r.get("resumed") for r in got):
        return got, None
    ae_counts = (counter.dec, counter.dec_graph, counter.enc) if counter is not None else None
    # the same timing again after the run: the overhead divides by the mean of the two medians, and their ratio
    # shows how much the machine's speed drifted meanwhile
    after = bare_eval_times(prior, shape, len(chunk), ctx.bare_repeats, backprop, ctx.bare_seconds)
    bare = mean_bare(before, after)
    nfe = int(got[0]["nfe"])
    n_bwd = backprop_evals(label, solver, prior, nfe)
    net = network_seconds(bare, nfe, n_bwd)
    seconds = float(got[0]["seconds"]) * len(chunk)
    record = dict(group=group.key, prior=group.prior, task=task, solver=ctx.shown(label),
                  preset=got[0].get("preset") or solver.preset, batch=len(chunk), nfe=nfe, nfe_backprop=n_bwd,
                  bare_fwd_s=bare["fwd"], bare_fwd_bwd_s=bare["fwd_bwd"], bare_drift=after["fwd"] / before["fwd"],
                  seconds=seconds, network_seconds=net, overhead=seconds / net if net > 0 else math.nan)
    if ae_counts is not None:
        ae = bare_autoencoder_times(counter, shape, job_shape(chunk[0]), len(chunk), ctx.bare_repeats,
                                    ctx.bare_seconds, prior.alphas_cumprod.device)
        ae_seconds = ae_counts[0] * ae["dec"] + ae_counts[1] * ae["dec_bwd"] + ae_counts[2] * ae["enc"]
        record.update(decoder_passes=ae_counts[0], decoder_passes_backprop=ae_counts[1], encoder_passes=ae_counts[2],
                      bare_dec_s=ae["dec"], bare_dec_bwd_s=ae["dec_bwd"], bare_enc_s=ae["enc"],
                      autoencoder_seconds=ae_seconds, overhead_with_autoencoder=seconds / (net + ae_seconds))
    return got, record


def job_shape(job: Job) -> tuple[int, int, int]:
    return tuple(job.m.image_shape)


def ctx_spec(ctx: Context, task: str) -> str:
    return task_spec(task, ctx.extra_tasks)


def _row(r: dict, base: dict, job: Job, label: str, preset: str, batch: int, prior: str) -> dict:
    return dict(base, image=job.rel.as_posix(), solver=label, preset=preset or "", prior=prior, batch=batch,
                status=r.get("status"), error=r.get("error"), psnr=r.get("psnr"), ssim=r.get("ssim"),
                lpips=r.get("lpips"), lpips_unavailable=r.get("lpips_unavailable"), seconds=r.get("seconds"),
                nfe=r.get("nfe"), output=r.get("output"), resumed=bool(r.get("resumed")))


# ---------------------------------------------------------------------------------------------------------------------
# throughput


def run_throughput(groups: list[Group], ctx: Context, task: str, batch_sizes: list[int],
                   steps: int) -> tuple[list[dict], list[dict]]:
    """Images per second at each batch size, per solver, on ``task`` with ``steps`` steps. Returns (rows, skipped)."""
    rows, skipped = [], []
    spec = ctx_spec(ctx, task)
    for group in groups:
        if group.skip or group.key not in ("faces", "latent"):
            continue
        prior = group.prior_obj
        need = max(batch_sizes)
        pool = group.images
        if len(pool) < need:  # the quality subset is smaller: the folder's own evenly spaced selection of `need`
            try:
                pool = load_images(group.data, prior.card, need, ctx.out / "throughput" / "references") or pool
            except RestoreError:
                pass
        images = [pool[i] if i < len(pool) else dataclasses.replace(pool[i % len(pool)],
                                                                    rel=f"{i:02d}_{pool[i % len(pool)].rel}")
                  for i in range(need)]
        task_dir = ctx.out / "throughput" / group.key
        jobs = make_jobs(images, spec, ctx.noise, ctx.seed, task_dir)
        for label in group.labels:
            preset = ctx.presets.get(label)
            solver, why = check_support(label, preset, steps, jobs[0], prior, ctx.params.get(label))
            if solver is None:
                skipped.append(dict(group=group.key, prior=group.prior, task=task, solver=ctx.shown(label),
                                    reason=why))
                continue
            per_batch = {}
            nfe = None
            try:
                for b in batch_sizes:
                    bare_eval_times(prior, state_shape(prior, job_shape(jobs[0])), b, 1, False)  # warm-up
                    got = run(jobs[:b], solver_of(label), group.prior, task_dir / f"{label}-b{b}", preset=preset,
                              steps=steps, batch_size=b, device=ctx.device, overwrite=True,
                              lpips_weights=ctx.lpips_weights, params=ctx.params.get(label))
                    seconds = float(got[0]["seconds"])
                    per_batch[b] = 1.0 / seconds if seconds > 0 else math.nan
                    nfe = got[0]["nfe"]
            except Exception as exc:  # noqa: BLE001 - report and go on
                why = f"crashed in the throughput runs: {type(exc).__name__}: {exc}"
                skipped.append(dict(group=group.key, prior=group.prior, task=task, solver=ctx.shown(label),
                                    reason=why))
                ctx.log(f"{label}: {why}")
                if not per_batch:
                    continue
            rows.append(dict(group=group.key, prior=group.prior, task=task, solver=ctx.shown(label),
                             preset=solver.preset, steps=steps, steps_param=solver.steps_param, nfe=nfe,
                             images_per_second={str(b): v for b, v in per_batch.items()}))
            ctx.log(f"throughput {label:12s} " + ", ".join(f"b{b}: {v:.2f} img/s" for b, v in per_batch.items()))
    return rows, skipped


# ---------------------------------------------------------------------------------------------------------------------
# GPU


def random_adm_prior(config, name: str):
    """A DiffusionPrior around an ADM UNet of ``config`` with random weights (timing does not depend on them)."""
    from priors.adm import ADMUNet
    from priors.base import DiffusionPrior, PriorCard

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ADMUNet(config)
    card = PriorCard(name=name, image_size=config.image_size, channels=config.in_channels,
                     domain="random weights (timing)", learned_variance=config.learn_sigma,
                     architecture={"kind": "adm", **config.to_dict()})
    return DiffusionPrior(net.eval(), card).eval()


def run_gpu(labels: list[str], noise: Noise, device: str = "cuda", config=None, config_name: str = "ffhq_10m",
            batches: tuple[int, ...] = (1, 8), short: tuple[int, int] = (2, 4), task: str = "sr4",
            data: Path | None = None, log=print) -> dict:
    """Each solver's paper preset on ``config`` (default: the FFHQ-256 ADM) at each batch size: two short runs
    (``short`` steps) give seconds = setup + per-step × steps, extrapolated to the preset's full steps."""
    from priors.configs import ADM_CONFIGS

    config = config or ADM_CONFIGS[config_name]
    prior = random_adm_prior(config, f"{config_name}-random").to(device)
    size, channels = config.image_size, config.in_channels
    spec = task_spec(task, {})
    images, source = _gpu_images(data, channels, size, max(batches))
    out = dict(device=_device_name(device), architecture=config_name,
               parameters=sum(p.numel() for p in prior.parameters()),
               image_size=size, task=task, spec=spec, short_steps=list(short), images=source, rows=[], skipped=[])
    for label in labels:
        name = solver_of(label)
        if label in LATENT_LABELS:
            out["skipped"].append(dict(solver=label, reason=f"{label} needs a latent prior; the FFHQ-256 "
                                                             f"architecture is a pixel ADM"))
            continue
        for b in batches:
            seeds = list(range(b))
            op = operators.build(spec, (channels, size, size), seeds=seeds, device=device)
            y = operators.measure(op, images[:b].to(device), noise, seeds)
            try:
                probe = get_solver(name)
                preset = probe.auto_preset(op, prior)
                full_solver = get_solver(name, preset=preset)
                key = full_solver.steps_param
                full = int(full_solver.params[key])
                full_solver.check(op, prior)
            except SolverError as exc:
                out["skipped"].append(dict(solver=label, reason=str(exc)))
                break
            points = []
            try:
                solve(get_solver(name, preset=preset, **{key: short[0]}), y, op, prior, seeds, noise=noise)  # warm-up
                for k in short:
                    r = solve(get_solver(name, preset=preset, **{key: k}), y, op, prior, seeds, noise=noise)
                    points.append(dict(steps=k, seconds=r.cost.seconds, nfe=r.cost.nfe,
                                       peak_mb=r.cost.peak_memory_mb))
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory at batch 8: report and go on
                out["skipped"].append(dict(solver=label, batch=b, reason=f"{type(exc).__name__}: {exc}"))
                log(f"gpu {label} batch {b}: {type(exc).__name__}: {exc}")
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()
                continue
            setup, per_step = time_line(points)
            total = setup + per_step * full
            nfe_full = round(extrapolate(points, "nfe", full))
            row = dict(solver=label, preset=preset or "(defaults)", batch=b, full_steps=full, steps_param=key,
                       nfe=nfe_full, seconds_total=total, seconds_per_image=total / b,
                       peak_memory_mb=max(p["peak_mb"] for p in points), points=points)
            out["rows"].append(row)
            log(f"gpu {label:8s} {row['preset']:14s} batch {b}: {row['seconds_per_image']:.2f} s/img "
                f"(extrapolated to {full} {key}), NFE {nfe_full}, peak {row['peak_memory_mb']:.0f} MB")
    return out


def time_line(points: list[dict]) -> tuple[float, float]:
    """(setup, per-step) seconds of the line through two short runs; a negative setup (timing noise) counts as 0."""
    (k1, t1), (k2, t2) = ((p["steps"], p["seconds"]) for p in points)
    per_step = (t2 - t1) / (k2 - k1)
    return max(t1 - per_step * k1, 0.0), per_step


def extrapolate(points: list[dict], field: str, steps: int) -> float:
    """``field`` at ``steps`` on the line through two short runs (a once-per-run part, e.g. DPS's operator-norm
    estimate on CT, is counted once, not once per step)."""
    (k1, v1), (k2, v2) = ((p["steps"], p[field]) for p in points)
    return v1 + (v2 - v1) / (k2 - k1) * (steps - k1)


#: one-channel operator families (the scale section gives their network one input channel)
GREY_FAMILIES = ("mri", "ct")


def run_scale(labels: list[str], presets: dict, noise: Noise, tasks: list[str], extra: dict | None = None,
              short: tuple[int, int] = (2, 4), device: str = "cpu", config=None, config_name: str = "ffhq_10m",
              repeats: int = 3, data: Path | None = None, log=print) -> dict:
    """Solver overhead at the papers' scale: each pixel solver's preset (``presets``, as in the quality section) on
    the ``config`` architecture (default the FFHQ-256 ADM, random weights; one input channel for MRI/CT tasks) at
    batch 1 on ``device``. After a warm-up run, two short runs (``short`` steps) give seconds = setup + per-step ×
    steps (the setup, e.g. RED-Diff's A⁺y, is paid once per image), extrapolated to the preset's full steps and
    divided by the full run's network time; the bare network is timed right before the first timed run and right
    after the second, as in the quality section. The overhead of the longer short run as measured is kept beside
    it."""
    from priors.configs import ADM_CONFIGS

    base = config or ADM_CONFIGS[config_name]
    size = base.image_size
    out = dict(device=_device_name(device), architecture=config_name, image_size=size, short_steps=list(short),
               repeats=repeats, rows=[], skipped=[])
    nets: dict[int, Any] = {}
    for task in tasks:
        spec = task_spec(task, extra or {})
        channels = 1 if operators.parse(spec).family in GREY_FAMILIES else base.in_channels
        if channels not in nets:
            cfg = base if channels == base.in_channels else type(base).from_dict(
                dict(base.to_dict(), in_channels=channels))
            nets[channels] = random_adm_prior(cfg, f"{config_name}-random").to(device)
        prior = nets[channels]
        images, source = _gpu_images(data, channels, size, 1)
        op = operators.build(spec, (channels, size, size), seeds=[0], device=device)
        y = operators.measure(op, images[:1].to(device), noise, [0])
        for label in labels:
            if label in LATENT_LABELS:
                continue
            name = solver_of(label)
            try:
                preset = presets.get(label) or get_solver(name).auto_preset(op, prior)
                solver = get_solver(name, preset=preset)
                solver.check(op, prior)
            except SolverError as exc:
                out["skipped"].append(dict(solver=label, task=task, reason=str(exc)))
                log(f"scale: {label} on {task} skipped: {exc}")
                continue
            key = solver.steps_param
            full = int(solver.params[key])
            backprop = name in BACKPROP
            shape = (channels, size, size)
            # a warm-up run first: one-time costs (allocator growth at this size, lazily built operator pieces) would
            # otherwise land in the first timed run and bend the line through the two
            solve(get_solver(name, preset=preset, **{key: min(short)}), y, op, prior, [0], noise=noise)
            before = bare_eval_times(prior, shape, 1, repeats, backprop)
            points = []
            for k in short:
                r = solve(get_solver(name, preset=preset, **{key: k}), y, op, prior, [0], noise=noise)
                points.append(dict(steps=k, seconds=float(r.cost.seconds), nfe=int(r.cost.nfe),
                                   operator_evals=int(r.cost.operator_evals)))
            after = bare_eval_times(prior, shape, 1, repeats, backprop)
            bare = mean_bare(before, after)

            def net(nfe: float) -> float:
                return network_seconds(bare, nfe, backprop_evals(label, solver, prior, round(nfe)))

            setup, per_step = time_line(points)
            nfe_full = extrapolate(points, "nfe", full)
            row = dict(solver=label, task=task, spec=spec, preset=preset or "(defaults)", channels=channels,
                       full_steps=full, steps_param=key, nfe=round(nfe_full),
                       nfe_backprop=backprop_evals(label, solver, prior, round(nfe_full)),
                       operator_evals=round(extrapolate(points, "operator_evals", full)), images=source,
                       bare_fwd_s=bare["fwd"], bare_fwd_bwd_s=bare["fwd_bwd"], bare_drift=after["fwd"] / before["fwd"],
                       setup_s=setup, per_step_s=per_step, seconds=setup + per_step * full,
                       network_seconds=net(nfe_full), points=points,
                       overhead_short=points[-1]["seconds"] / net(points[-1]["nfe"]))
            row["overhead"] = row["seconds"] / row["network_seconds"]
            out["rows"].append(row)
            log(f"scale {label:8s} {task:15s} {row['preset']:10s}: {full} {key}, NFE {row['nfe']}, "
                f"setup {setup:.2f} s + {per_step:.2f} s/step, bare {bare['fwd']:.2f} s, overhead "
                f"{row['overhead']:.3f} ({points[-1]['steps']} steps as run: {row['overhead_short']:.3f})")
    return out


def _gpu_images(data: Path | None, channels: int, size: int, n: int) -> tuple[torch.Tensor, str]:
    if data is not None and data.is_dir():
        try:
            files = select_images(data, 0)
            xs = [load_image(p) for p in files]
            xs = [x for x in xs if tuple(x.shape) == (channels, size, size)]
            if xs:
                return torch.stack([xs[i % len(xs)] for i in range(n)]), f"{len(xs)} images of {data}"
        except RestoreError:
            pass
    g = torch.Generator().manual_seed(0)
    return torch.rand((n, channels, size, size), generator=g), "random images (no test folder of this size)"


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({cpu_model()})"


# ---------------------------------------------------------------------------------------------------------------------
# reporting


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    info = dict(cpu=cpu_model(), cores=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), platform=platform.platform(), device=device,
                load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return info


def prior_info(group: Group) -> dict:
    from priors.base import sha256_file

    info = dict(group=group.key, given=group.prior, available=not group.skip, skip=group.skip or None)
    if group.prior_obj is None:
        return info
    card = group.prior_obj.card
    sha = card.sha256
    if not sha and Path(group.prior).is_file():
        sha = sha256_file(group.prior)
    info.update(name=card.name, sha256=sha, training_steps=card.extra.get("steps"),
                parameters=card.extra.get("parameters") or sum(p.numel() for p in group.prior_obj.parameters()),
                image_size=card.image_size, channels=card.channels, latent=bool(card.latent),
                train_seconds=card.extra.get("train_seconds"), train_hardware=card.extra.get("hardware"),
                images=[img.rel for img in group.images], data=_shown_path(group.data))
    return info


def _shown_path(path: Path) -> str:
    """A test folder as the docs should show it: relative to the repository when it is beside it (../shared/...)."""
    try:
        return os.path.relpath(Path(path).resolve(), ROOT) if Path(path).resolve().is_relative_to(ROOT.parent) \
            else str(path)
    except ValueError:
        return str(path)


def _fmt(mean: float, std: float, fmt: str) -> str:
    return "–" if mean is None or math.isnan(mean) else f"{mean:{fmt}} ± {std:{fmt}}"


def quality_tables(rows: list[dict]) -> tuple[list[str], dict]:
    """Markdown tables per task (mean ± std, best in bold) and the summary {task: {solver: {...}}}. The latent group
    (its own, smaller subset of the faces) gets its own tables, "TASK (latent)", with its own pinv rows."""
    def key(r: dict) -> str:
        return f"{r['task']} (latent)" if r.get("group") == "latent" else r["task"]

    rows = [dict(r, task_key=key(r)) for r in rows]
    relabelled = [dict(r, operator=r["task_key"], solver=r["solver"]) for r in rows]
    summary = summarise(relabelled)
    lines: list[str] = []
    for task, per_solver in summary.items():
        mine = [r for r in rows if r["task_key"] == task]
        spec = mine[0]["spec"]
        lines += [f"#### {task} — `{spec}`", ""]
        lines += ["| solver | preset | prior | n | PSNR ↑ | SSIM ↑ | LPIPS ↓ | s/img | NFE |",
                  "|---|---|---|---|---|---|---|---|---|"]
        best = {m: (max if m in ("psnr", "ssim") else min)(
            (v[m][0] for v in per_solver.values() if not math.isnan(v[m][0])), default=math.nan)
            for m in ("psnr", "ssim", "lpips")}
        for label, v in per_solver.items():
            of = [r for r in mine if r["solver"] == label]
            total = len(of)
            presets = sorted({r["preset"] for r in of if r["preset"]}) or ["–"]
            priors_used = "–" if label == "pinv" else of[0]["prior"]
            cells = []
            for m, fmt in (("psnr", ".2f"), ("ssim", ".3f"), ("lpips", ".3f")):
                mean, std = v[m]
                text = _fmt(mean, std, fmt)
                cells.append(f"**{text}**" if not math.isnan(mean) and mean == best[m] else text)
            n = f"{v['n']}" if v["n"] == total else f"{v['n']} of {total}"
            lines.append(f"| {label} | {', '.join(presets)} | {priors_used} | {n} | " + " | ".join(cells)
                         + f" | {v['seconds'][0]:.3g} | {v['nfe'][0]:.0f} |")
        failed = [r for r in mine if r["status"] != "written"]
        if failed:
            lines += ["", f"Failed: " + "; ".join(f"{r['solver']} on {r['image']} ({r.get('error') or r['status']})"
                                                   for r in failed[:5])]
        reasons = {r["lpips_unavailable"] for r in mine if r.get("lpips_unavailable")}
        if reasons:
            lines += ["", f"LPIPS unavailable: {sorted(reasons)[0]}"]
        lines.append("")
    return lines, summary


def overhead_tables(overhead: list[dict]) -> list[str]:
    """Per solver × task × batch size: NFE, bare evaluation times, seconds per batch and the overhead; then per
    solver over all its runs, against the target. For latent priors also the overhead when the autoencoder's passes
    (counted, and timed bare like the network) are counted as network work too."""
    if not overhead:
        return ["No overhead measured (the quality section ran no solver).", ""]
    with_ae = any("overhead_with_autoencoder" in o for o in overhead)
    head = ("| solver | task | preset | batch | runs | NFE (backprop) | bare eval ms (fwd / fwd+bwd) | "
            "bare after/before | s per batch | overhead (median, max) |")
    lines = [head + (" decoder passes (backprop), encoder passes | overhead counting them |" if with_ae else ""),
             "|---" * (10 + 2 * with_ae) + "|"]
    by: dict[tuple, list[dict]] = {}
    for o in overhead:
        by.setdefault((o["solver"], o["task"], o["preset"], o["batch"]), []).append(o)
    for (solver, task, preset, batch), runs in by.items():
        ov = [o["overhead"] for o in runs]
        fb = [o["bare_fwd_bwd_s"] for o in runs if o["bare_fwd_bwd_s"]]
        bare = f"{1e3 * statistics.median(o['bare_fwd_s'] for o in runs):.1f}" + (
            f" / {1e3 * statistics.median(fb):.1f}" if fb else "")
        drift = [o["bare_drift"] for o in runs]
        line = (f"| {solver} | {task} | {preset or '–'} | {batch} | {len(runs)} | {runs[0]['nfe']} "
                f"({runs[0]['nfe_backprop']}) | {bare} | {min(drift):.2f}–{max(drift):.2f} | "
                f"{statistics.median(o['seconds'] for o in runs):.3g} | {statistics.median(ov):.2f}, {max(ov):.2f} |")
        if with_ae:
            if "overhead_with_autoencoder" in runs[0]:
                ova = [o["overhead_with_autoencoder"] for o in runs]
                line += (f" {runs[0]['decoder_passes'] + runs[0]['decoder_passes_backprop']} "
                         f"({runs[0]['decoder_passes_backprop']}), {runs[0]['encoder_passes']} | "
                         f"{statistics.median(ova):.2f}, {max(ova):.2f} |")
            else:
                line += " – | – |"
        lines.append(line)
    lines += ["", f"Per solver over all its runs (target ≤ {OVERHEAD_TARGET:.2f}; 'steady' runs are those during "
                  f"which the bare evaluation time changed by at most 10%, i.e. the machine kept its speed; the "
                  f"verdict uses the steady runs when there are any):", "",
              "| solver | runs | median | max | steady runs | steady median | within target |"
              + (" counting autoencoder passes: median, within target |" if with_ae else ""),
              "|---" * (7 + with_ae) + "|"]
    for solver in dict.fromkeys(o["solver"] for o in overhead):
        mine = [o for o in overhead if o["solver"] == solver]
        ov = [o["overhead"] for o in mine]
        steady = [o for o in mine if abs(o["bare_drift"] - 1) <= 0.10]
        use = steady or mine
        med = statistics.median(o["overhead"] for o in use)
        line = (f"| {solver} | {len(ov)} | {statistics.median(ov):.2f} | {max(ov):.2f} | {len(steady)} | "
                + (f"{statistics.median(o['overhead'] for o in steady):.2f}" if steady else "–")
                + f" | {'yes' if med <= OVERHEAD_TARGET else '**no**'} |")
        if with_ae:
            if "overhead_with_autoencoder" in mine[0]:
                med_ae = statistics.median(o["overhead_with_autoencoder"] for o in use)
                line += f" {med_ae:.2f}, {'yes' if med_ae <= OVERHEAD_TARGET else '**no**'} |"
            else:
                line += " – |"
        lines.append(line)
    lines.append("")
    return lines


def throughput_table(rows: list[dict], batch_sizes: list[int]) -> list[str]:
    if not rows:
        return ["No throughput measured.", ""]
    head = "| solver | preset | steps | NFE | " + " | ".join(f"img/s at batch {b}" for b in batch_sizes) + " |"
    lines = [head, "|" + "---|" * (4 + len(batch_sizes))]
    for r in rows:
        cells = [f"{r['images_per_second'].get(str(b), math.nan):.3g}" for b in batch_sizes]
        lines.append(f"| {r['solver']} | {r['preset'] or '(defaults)'} | {r['steps']} {r['steps_param']} | "
                     f"{r['nfe']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def gpu_table(gpu: dict) -> list[str]:
    if gpu.get("skipped_reason"):
        return [f"Skipped: {gpu['skipped_reason']}.", ""]
    lines = [f"{gpu['device']}; architecture `{gpu['architecture']}` ({gpu['parameters'] / 1e6:.1f} M parameters, "
             f"random weights), {gpu['image_size']}×{gpu['image_size']}, task {gpu['task']} (`{gpu['spec']}`), "
             f"{gpu['images']}; extrapolated from runs of {' and '.join(map(str, gpu['short_steps']))} steps.", "",
             "| solver | preset | batch | steps | NFE | s/img | peak memory (MB) |", "|---|---|---|---|---|---|---|"]
    for r in gpu["rows"]:
        lines.append(f"| {r['solver']} | {r['preset']} | {r['batch']} | {r['full_steps']} {r['steps_param']} | "
                     f"{r['nfe']} | {r['seconds_per_image']:.3g} | {r['peak_memory_mb']:.0f} |")
    for s in gpu.get("skipped", []):
        lines.append(f"\n{s['solver']}: skipped ({s['reason']}).")
    lines.append("")
    return lines


def scale_table(scale: dict) -> list[str]:
    if not scale.get("rows") and not scale.get("skipped"):
        return ["Not run.", ""]
    k1, k2 = scale["short_steps"]
    lines = [f"{scale['device']}; architecture `{scale['architecture']}` (random weights; one input channel for "
             f"MRI/CT tasks), {scale['image_size']}×{scale['image_size']}, batch 1; runs of {k1} and {k2} steps give "
             f"seconds = setup + per-step × steps, extrapolated to the preset's steps; bare evaluation: median of "
             f"{scale['repeats']} before the first and {scale['repeats']} after the second run.", "",
             "| solver | task | preset | steps | NFE (backprop) | operator calls | bare eval s (fwd / fwd+bwd) | "
             "bare after/before | setup s + s per step | overhead (full preset) | overhead as run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in scale["rows"]:
        bare = f"{r['bare_fwd_s']:.2f}" + (f" / {r['bare_fwd_bwd_s']:.2f}" if r["bare_fwd_bwd_s"] else "")
        mark = "" if r["overhead"] <= OVERHEAD_TARGET else " ✗"
        calls = round(extrapolate(r["points"], "operator_evals", r["full_steps"]))
        lines.append(f"| {r['solver']} | {r['task']} | {r['preset']} | {r['full_steps']} {r['steps_param']} | "
                     f"{r['nfe']} ({r['nfe_backprop']}) | {calls} | {bare} | {r['bare_drift']:.2f} | "
                     f"{r['setup_s']:.2f} + {r['per_step_s']:.2f} | {r['overhead']:.3f}{mark} | "
                     f"{r['overhead_short']:.3f} ({r['points'][-1]['steps']} steps) |")
    for s in scale.get("skipped", []):
        lines.append(f"\n{s['solver']} on {s['task']}: skipped ({s['reason'].rstrip('.')}).")
    lines.append("")
    return lines


def results_markdown(result: dict) -> str:
    cfg, machine = result["config"], result["machine"]
    lines = [f"_Generated {result['date']} by `{result['command']}`._", "",
             "### What was run", "",
             f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch thread(s), "
             f"device {machine['device']}, torch {machine['torch']}, Python {machine['python']}"
             + (f", load average {machine['load_average']} at the start" if machine.get("load_average") is not None
                else "") + (f"; GPU {machine['cuda']}" if machine.get("cuda") else "") + "."]
    for p in result["priors"]:
        if p.get("available"):
            steps = f", {p['training_steps']} training steps" if p.get("training_steps") else ""
            lines.append(f"- Prior ({p['group']}): `{p['name']}`, sha256 `{(p['sha256'] or '?')[:16]}…`{steps}, "
                         f"{p['parameters'] / 1e6:.2f} M parameters; {len(p['images'])} images of `{p['data']}`: "
                         f"{', '.join(p['images'][:16])}{' …' if len(p['images']) > 16 else ''}.")
        else:
            lines.append(f"- Prior ({p['group']}) `{p['given']}`: not run (see Skipped).")
    chosen = ", ".join(f"{k} {v or 'paper (per task)'}" for k, v in cfg["presets"].items()
                       if k in cfg.get("solvers", cfg["presets"]))
    shown = {r["solver"] for r in result.get("rows", []) + result.get("overhead", [])}
    variants = [n for n in (cfg.get("variant_notes") or run_variants(cfg)) if n.split(" = ")[0] in shown]
    lines += [f"- Presets: {chosen}" + (f"; steps overridden to {cfg['steps_override']}" if cfg["steps_override"]
                                        else "") + ".",
              *([f"- Labelled variants: {'; '.join(variants)}."] if variants else []),
              f"- Noise σ = {cfg['noise']} on [0, 1] (σ = {2 * float(cfg['noise_sigma']):g} on [-1, 1]); seed "
              f"{cfg['seed']}; batch size {cfg['batch_size']}.", ""]
    if result.get("skipped"):
        lines += ["Skipped:", ""]
        for s in result["skipped"]:
            what = "everything" if s["task"] == "*" else f"{s['solver']} on {s['task']}"
            lines.append(f"- {s['group']} ({s['prior']}), {what}: {s['reason'].rstrip('.')}.")
        lines.append("")
    if "quality" in cfg["sections"]:
        lines += ["### Quality", "", "Mean ± standard deviation over the images; best per column in **bold**; "
                  "s/img and NFE are means per image.", ""]
        lines += result["quality_markdown"] or ["No quality results.", ""]
        lines += ["### Solver overhead", ""] + overhead_tables(result["overhead"])
    if "throughput" in cfg["sections"]:
        lines += ["### Batch throughput", "",
                  f"Task {cfg['throughput_task']}, the presets above with {cfg['throughput_steps']} steps "
                  f"(DAPS: annealing levels); one batch per size.", ""]
        lines += throughput_table(result["throughput"], cfg["batch_sizes"])
    if "gpu" in cfg["sections"]:
        lines += ["### GPU: paper presets on the FFHQ-256 architecture", ""] + gpu_table(result["gpu"])
    if "scale" in cfg["sections"]:
        lines += ["### Solver overhead at the papers' scale", ""] + scale_table(result.get("scale", {}))
    return "\n".join(lines).rstrip() + "\n"


def update_markdown(path: Path, text: str) -> None:
    """Replace the text between the BEGIN/END markers of ``path`` (append the section when they are absent)."""
    path = Path(path)
    block = f"{BEGIN}\n\n{text}\n{END}"
    if path.is_file():
        old = path.read_text()
        if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
            new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
        else:
            new = old.rstrip() + "\n\n## Results\n\n" + block + "\n"
    else:
        new = "# Solver benchmarks\n\n## Results\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(new)
    os.replace(tmp, path)


def _clean(obj):
    """JSON-safe: NaN/inf → None, paths → str, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------------------------------------
# main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="faces64", help="pixel prior for the face tasks: name or checkpoint path")
    ap.add_argument("--data", default=str(SHARED / "test" / "faces64"), help="test folder for the face tasks")
    ap.add_argument("--limit", type=int, default=16, help="images per test folder, evenly spaced (0: all)")
    ap.add_argument("--limits", default="", help="per-group limits over --limit, e.g. latent=8,mri=8,ct=10")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                    help="merge the --json files of runs made side by side (e.g. one group per core) and write "
                         "--markdown / --json from them; nothing is run")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                    help=f"face tasks (default {','.join(DEFAULT_TASKS)}); names of TASKS or operator presets")
    ap.add_argument("--task-spec", action="append", default=[], metavar="NAME=SPEC",
                    help="define a task by an operator spec (repeatable)")
    ap.add_argument("--solvers", default="dps,ddnm,daps,reddiff,resample",
                    help="solvers (pinv always runs); daps also runs as latent DAPS on the latent prior")
    ap.add_argument("--presets", default="fast", help="fast | paper | SOLVER=PRESET,... (see the module doc)")
    ap.add_argument("--param", action="append", default=[], metavar="SOLVER:KEY=VALUE",
                    help="override one solver parameter on top of its preset in the quality and throughput runs, "
                         "e.g. resample:noise_stop=true (repeatable)")
    ap.add_argument("--label-suffix", default="",
                    help="appended to the solvers' labels in this run's rows (e.g. '+noise_stop'), so that runs of "
                         "one solver with other presets or parameters stay apart when combined; a suffix that "
                         "starts with '-' needs the = form: --label-suffix=-fast")
    ap.add_argument("--noise", default="0.025", help="noise σ on [0, 1] (0.025 = the papers' 0.05 on [-1, 1])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1, help="batch size of the quality runs")
    ap.add_argument("--steps-override", type=int, default=None,
                    help="set every solver's steps (DAPS: annealing levels), e.g. 5 for a smoke run")
    ap.add_argument("--latent-prior", default="faces64-latent", help="latent prior for ReSample and latent DAPS "
                                                                    "('none' to skip)")
    ap.add_argument("--mri-prior", default="brain-mri", help="prior for the MRI tasks ('none' to skip)")
    ap.add_argument("--mri-data", default=str(SHARED / "test" / "brain_mri128"))
    ap.add_argument("--mri-tasks", default="mri-4x,mri-8x")
    ap.add_argument("--ct-prior", default="ct", help="prior for the CT task ('none' to skip)")
    ap.add_argument("--ct-data", default=str(SHARED / "test" / "ct_dicom"))
    ap.add_argument("--ct-tasks", default="ct-sparse60")
    ap.add_argument("--lpips-weights", default=None,
                    help="LPIPS weights file (default: $RESTORE_LPIPS_WEIGHTS, else torchvision's cache)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench-solvers"), help="outputs, results.json, report.md")
    ap.add_argument("--resume", action="store_true",
                    help="keep outputs a previous run finished (they are left out of the overhead)")
    ap.add_argument("--markdown", default=None, help="write the results section of this file (docs/benchmarks.md), "
                                                     "and its preset table when it has one")
    ap.add_argument("--presets-table", nargs="+", default=None, metavar="MD",
                    help="only rewrite the preset table (between its markers) of these files from the solver "
                         "classes' presets, e.g. docs/benchmarks.md docs/benchmarks-paper.md; nothing is run")
    ap.add_argument("--json", default=None, help="write everything measured to this JSON file")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (recorded in the results)")
    ap.add_argument("--device", default="cpu", help="device of the quality/overhead/throughput runs")
    ap.add_argument("--sections", default="quality,throughput,gpu",
                    help="quality (with the overhead), throughput, gpu, scale (overhead on the FFHQ-256 "
                         "architecture, on --device; minutes per solver on a CPU, so not in the default)")
    ap.add_argument("--bare-repeats", type=int, default=5,
                    help="bare network evaluations timed before and after each batch (median; at least this many)")
    ap.add_argument("--bare-seconds", type=float, default=0.5,
                    help="... and at least this many seconds of them, before and after")
    ap.add_argument("--batch-sizes", default="1,4,16", help="batch sizes of the throughput section")
    ap.add_argument("--throughput-task", default="sr4")
    ap.add_argument("--throughput-steps", type=int, default=10,
                    help="steps of the throughput runs (DAPS: annealing levels)")
    ap.add_argument("--gpu-batches", default="1,8")
    ap.add_argument("--gpu-steps", default="2,4", help="the two short step counts the GPU times extrapolate from")
    ap.add_argument("--scale-tasks", default="deblur-motion,ct-sparse60,sr4",
                    help="tasks of the scale section (CT/MRI on a one-channel network)")
    ap.add_argument("--scale-steps", default="2,4",
                    help="the two short step counts the scale section extrapolates from (DAPS: annealing levels)")
    ap.add_argument("--scale-repeats", type=int, default=3,
                    help="bare evaluations timed before and after each scale run (median)")
    return ap


def parse_solver_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``SOLVER:KEY=VALUE`` items → {label: {key: value}}; an unknown solver or parameter ends here, before any
    work."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        label, sep, rest = item.partition(":")
        key, eq, value = rest.partition("=")
        label, key = label.strip(), key.strip()
        if not sep or not eq or not key:
            raise SystemExit(f"--param takes SOLVER:KEY=VALUE (e.g. resample:noise_stop=true), got '{item}'.")
        if label not in FAST:
            raise SystemExit(f"--param: unknown solver '{label}'; use one of {', '.join(FAST)}.")
        try:
            get_solver(solver_of(label), **{key: value.strip()})
        except SolverError as exc:
            raise SystemExit(f"--param {item}: {exc}") from None
        out.setdefault(label, {})[key] = value.strip()
    return out


def run_variants(cfg: dict) -> list[str]:
    """For a run whose rows carry a label suffix or parameters over the presets: what each such label ran."""
    suffix, params, presets = cfg.get("label_suffix") or "", cfg.get("params") or {}, cfg.get("presets") or {}
    notes = []
    for label in cfg.get("solvers", []):
        if suffix or params.get(label):
            extra = "".join(f", {k}={v}" for k, v in params.get(label, {}).items())
            notes.append(f"{label}{suffix} = {label}, preset {presets.get(label) or 'paper (per task)'}{extra}")
    return notes


def parse_limits(text: str) -> dict[str, int]:
    out = {}
    for item in split_list(text):
        key, sep, value = item.partition("=")
        if not sep or key not in ("faces", "latent", "mri", "ct") or not value.strip().isdigit():
            raise SystemExit(f"--limits takes GROUP=N items with GROUP one of faces, latent, mri, ct; got '{item}'.")
        out[key] = int(value)
    return out


def combine(paths: list[str]) -> dict:
    """One result from the --json files of several runs (e.g. the face group on one core and the other groups on
    the other): rows, overhead, throughput, skipped and priors are concatenated (a solver × task that a later file
    ran again replaces the earlier file's rows and timings, a solver's throughput measured again likewise); the
    configuration is the first
    run's, with the union of the solvers, tasks and sections; the commands and machines of all runs are kept."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(results[0])
    merged["config"] = dict(results[0]["config"])
    for key in ("rows", "overhead", "throughput", "skipped", "priors"):
        merged[key] = [item for r in results for item in r.get(key, [])]
    # a later run that reran a solver on a task (e.g. after a fix) replaces the earlier rows and timings of it
    last = {}
    for i, r in enumerate(results):
        for row in r.get("rows", []):
            last[(row["group"], row["task"], row["solver"])] = i
    merged["rows"] = [row for i, r in enumerate(results) for row in r.get("rows", [])
                      if last[(row["group"], row["task"], row["solver"])] == i]
    merged["overhead"] = [o for i, r in enumerate(results) for o in r.get("overhead", [])
                          if last.get((o["group"], o["task"], o["solver"]), i) == i]
    # likewise a solver's throughput on a group: the last run that measured it
    last_tp = {(t["group"], t["solver"]): i for i, r in enumerate(results) for t in r.get("throughput", [])}
    merged["throughput"] = [t for i, r in enumerate(results) for t in r.get("throughput", [])
                            if last_tp[(t["group"], t["solver"])] == i]
    seen, priors = set(), []
    for p in merged["priors"]:  # a group that one run skipped and another ran is shown once, as run
        if p.get("available") or not any(q.get("available") and q["group"] == p["group"] for q in merged["priors"]):
            if (p["group"], p.get("name") or p.get("given")) not in seen:
                seen.add((p["group"], p.get("name") or p.get("given")))
                priors.append(p)
    merged["priors"] = priors
    ran = {p["group"] for p in priors if p.get("available")}
    merged["skipped"] = [s for s in merged["skipped"] if not (s["task"] == "*" and s["group"] in ran)]
    merged["skipped"] = list({(s["group"], s["task"], s["solver"], s["reason"]): s  # the same skip once
                              for s in merged["skipped"]}.values())
    cfg = merged["config"]
    for key in ("solvers", "sections"):
        cfg[key] = list(dict.fromkeys(v for r in results for v in r["config"].get(key, [])))
    cfg["variant_notes"] = list(dict.fromkeys(note for r in results for note in run_variants(r["config"])))
    cfg["tasks"] = {k: v for r in results for k, v in r["config"].get("tasks", {}).items()}
    cfg["limits"] = {k: v for r in results for k, v in (r["config"].get("limits") or {}).items()}
    merged["command"] = " ; ".join(r["command"] for r in results)
    merged["gpu"] = next((r["gpu"] for r in results if r.get("gpu") and not r["gpu"].get("skipped_reason")),
                         results[0].get("gpu", {}))
    # the scale section: rows of all runs, a solver × task measured again replacing the earlier measurement
    scales = [r["scale"] for r in results if r.get("scale", {}).get("rows") or r.get("scale", {}).get("skipped")]
    merged["scale"] = dict(scales[-1]) if scales else results[0].get("scale", {})
    if scales:
        last_sc = {(row["solver"], row["task"]): i for i, sc in enumerate(scales) for row in sc["rows"]}
        merged["scale"]["rows"] = [row for i, sc in enumerate(scales) for row in sc["rows"]
                                   if last_sc[(row["solver"], row["task"])] == i]
        merged["scale"]["skipped"] = list({(x["solver"], x["task"]): x for sc in scales
                                           for x in sc.get("skipped", [])}.values())
    md, summary = quality_tables(merged["rows"])
    merged.update(quality_markdown=md, summary=summary_lists(summary))
    return merged


def main(argv: list[str] | None = None, log=print) -> dict:
    args = build_parser().parse_args(argv)
    if args.presets_table:
        text = presets_markdown()
        for path in args.presets_table:
            if not update_presets(Path(path), text):
                raise SystemExit(f"--presets-table: {path} has no preset-table markers ({PRESETS_BEGIN} … "
                                 f"{PRESETS_END}).")
            log(f"wrote the preset table of {path}")
        return {"presets_table": text}
    if args.combine:
        return write_outputs(combine(args.combine), args, log)
    torch.set_num_threads(max(1, args.threads))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = str(torch.device(args.device))
    sections = split_list(args.sections)
    bad = set(sections) - {"quality", "overhead", "throughput", "gpu", "scale"}
    if bad:
        raise SystemExit(f"--sections: unknown {', '.join(sorted(bad))}; use quality, throughput, gpu, scale.")
    try:
        scale_steps = tuple(int(s) for s in split_list(args.scale_steps))
    except ValueError:
        scale_steps = ()
    if len(scale_steps) != 2 or scale_steps[0] == scale_steps[1] or min(scale_steps) < 1:
        raise SystemExit("--scale-steps needs two different positive step counts, e.g. 2,4.")
    args.scale_steps = scale_steps
    if "overhead" in sections:
        sections = [s for s in sections if s != "overhead"] + ([] if "quality" in sections else ["quality"])
    presets = parse_presets(args.presets)
    extra = {}
    for item in args.task_spec:
        if "=" not in item:
            raise SystemExit(f"--task-spec must look like NAME=SPEC, got '{item}'.")
        name, spec = item.split("=", 1)
        extra[name.strip()] = spec.strip()
    tasks = split_list(args.tasks)
    for t in (tasks + split_list(args.mri_tasks) + split_list(args.ct_tasks) + [args.throughput_task]
              + split_list(args.scale_tasks)):
        task_spec(t, extra)  # unknown names end here, before any work
    labels = split_list(args.solvers)
    for label in labels:
        if label not in FAST and label != "pinv":
            raise SystemExit(f"--solvers: unknown solver '{label}'; use some of {', '.join(FAST)}.")
    args.param = parse_solver_params(args.param)
    batch_sizes = [int(b) for b in split_list(args.batch_sizes)]
    gpu_batches = tuple(int(b) for b in split_list(args.gpu_batches))
    gpu_steps = tuple(int(s) for s in split_list(args.gpu_steps))
    if len(gpu_steps) != 2 or gpu_steps[0] == gpu_steps[1]:
        raise SystemExit("--gpu-steps needs two different step counts, e.g. 2,4.")
    with SharedPriors():
        return _benchmark(args, argv, sections, presets, extra, tasks, labels, batch_sizes, gpu_batches, gpu_steps,
                          log)


def _benchmark(args, argv, sections, presets, extra, tasks, labels, batch_sizes, gpu_batches, gpu_steps,
               log) -> dict:
    pixel = [s for s in labels if s in PIXEL_SOLVERS]
    latent = [s for s in ("resample", "latent-daps") if s in labels or (s == "latent-daps" and "daps" in labels)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    noise = Noise.parse(args.noise)
    ctx = Context(out=out, noise=noise, seed=args.seed, batch_size=max(1, args.batch_size), steps=args.steps_override,
                  presets=presets, device=args.device, lpips_weights=args.lpips_weights, resume=args.resume,
                  bare_repeats=args.bare_repeats, bare_seconds=args.bare_seconds, log=log, extra_tasks=extra,
                  params=args.param, label_suffix=args.label_suffix)
    groups = [Group("faces", args.prior, Path(args.data), tasks, pixel),
              Group("latent", args.latent_prior, Path(args.data), tasks, latent),
              Group("mri", args.mri_prior, Path(args.mri_data), split_list(args.mri_tasks), pixel),
              Group("ct", args.ct_prior, Path(args.ct_data), split_list(args.ct_tasks), pixel)]
    groups = [g for g in groups if g.labels]
    limits = parse_limits(args.limits)
    for g in groups:
        prepare_group(g, limits.get(g.key, args.limit), args.device, out)
        log(f"{g.key}: " + (f"skipped — {g.skip}" if g.skip else
                            f"prior {g.prior_obj.card.name}, {len(g.images)} images of {g.data}"))

    config = dict(presets=presets, solvers=pixel + latent, steps_override=args.steps_override, noise=args.noise,
                  noise_sigma=getattr(noise, "std", 0.0), seed=args.seed, limit=args.limit, limits=limits,
                  batch_size=ctx.batch_size,
                  tasks={t: task_spec(t, extra) for g in groups for t in g.tasks}, sections=sections,
                  batch_sizes=batch_sizes, throughput_task=args.throughput_task,
                  throughput_steps=args.throughput_steps, bare_repeats=args.bare_repeats,
                  bare_seconds=args.bare_seconds, gpu_batches=list(gpu_batches), gpu_steps=list(gpu_steps),
                  scale_tasks=split_list(args.scale_tasks), scale_steps=list(args.scale_steps),
                  params=args.param, label_suffix=args.label_suffix,
                  lpips_weights=args.lpips_weights or os.environ.get("RESTORE_LPIPS_WEIGHTS"))
    command = "python benchmarks/solvers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), command=command.strip(),
                        machine=machine_info(args.device), versions=_versions(), config=config,
                        priors=[prior_info(g) for g in groups], rows=[], overhead=[], throughput=[],
                        skipped=[dict(group=g.key, prior=g.prior, task="*", solver="*", reason=g.skip)
                                 for g in groups if g.skip],
                        quality_markdown=[], summary={}, gpu={}, scale={})

    if "quality" in sections:
        rows, overhead, skipped = run_quality(groups, ctx)
        result.update(rows=rows, overhead=overhead)
        result["skipped"] += skipped
        if rows:
            flat = [{k: r.get(k) for k in COLUMNS} | {"operator": r["task"], "solver": r["solver"]} for r in rows]
            write_results(out, flat)
            write_report(out, flat)
        md, summary = quality_tables(rows)
        result.update(quality_markdown=md, summary=summary)
        log("\n## Quality\n\n" + "\n".join(md))
        log("## Solver overhead\n\n" + "\n".join(overhead_tables(overhead)))

    if "throughput" in sections:
        tp, tp_skipped = run_throughput(groups, ctx, args.throughput_task, batch_sizes, args.throughput_steps)
        result["throughput"] = tp
        result["skipped"] += tp_skipped
        log("## Batch throughput\n\n" + "\n".join(throughput_table(tp, batch_sizes)))

    if "gpu" in sections:
        if torch.cuda.is_available():
            result["gpu"] = run_gpu(pixel + latent, noise, device="cuda", batches=gpu_batches, short=gpu_steps,
                                    data=SHARED / "test" / "ffhq256", log=log)
        else:
            result["gpu"] = dict(skipped_reason="no CUDA device on this machine (torch.cuda.is_available() is "
                                                "False); run the script on a GPU machine for this section")
        log("## GPU\n\n" + "\n".join(gpu_table(result["gpu"])))

    if "scale" in sections:
        result["scale"] = run_scale(pixel, presets, noise, split_list(args.scale_tasks), extra, short=args.scale_steps,
                                    device=args.device, repeats=args.scale_repeats,
                                    data=SHARED / "test" / "ffhq256", log=log)
        log("## Solver overhead at the papers' scale\n\n" + "\n".join(scale_table(result["scale"])))

    result["summary"] = summary_lists(result["summary"])
    return write_outputs(result, args, log)


def summary_lists(summary: dict) -> dict:
    """The quality summary with its (mean, std) tuples as lists (JSON)."""
    return {task: {s: {m: list(v) if isinstance(v, tuple) else v for m, v in d.items()} for s, d in per.items()}
            for task, per in summary.items()}


def write_outputs(result: dict, args, log) -> dict:
    """The results section of --markdown and the --json file, when asked for."""
    if args.markdown:
        update_markdown(Path(args.markdown), results_markdown(result))
        log(f"wrote the results section of {args.markdown}")
        if update_presets(Path(args.markdown)):
            log(f"wrote the preset table of {args.markdown}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_clean(result), indent=1, ensure_ascii=False) + "\n")
        log(f"wrote {args.json}")
    return result


def _versions() -> dict:
    from restore.solve import versions

    return versions()


if __name__ == "__main__":
    main()
