"""``restore solve``: measurements (or plain images with ``--operator``) → restored images with JSON sidecars.

Inputs are grouped by operator and image size and run in batches; every image keeps its own seed, so a result does
not depend on the batch it ran in. A folder is processed recursively into the same structure under ``--out``;
images whose output exists are skipped (``--overwrite`` redoes them), so an interrupted run resumes where it stopped;
an output that an earlier run made with other settings (solver, operator, noise, seed, prior weights, preset, steps,
parameters, samples, --equivariant) is refused instead, so a resumed table never mixes two runs. Outputs are written
to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import operators
from operators import Noise, OperatorError
from operators.mri import is_hermitian, lowres_phase

from .acceleration import Acceleration, prepare
from .degrade import image_seed
from .io import (Measurement, RestoreError, atomic_group, find_images, load_image, load_image_meta, load_measurement,
                 save_image, to_tensor, write_json)
from .metrics import psnr, ssim
from .fit import Fit, fit_measurement, fit_reference, scale_warning, unfit
from .fit import plan as plan_fit
from .outputs import OutputGuard, is_restore_sidecar, output_names
from .resources import check_memory, duration, expected_nfe, seconds_per_evaluation
from .solvers import SOLVERS, get_solver, solve
from .solvers.base import SolverError, check_estimate, task_of


@dataclasses.dataclass
class Job:
    source: Path
    rel: Path
    m: Measurement
    reference: torch.Tensor | None = None
    reference_path: str = ""
    plain: bool = False                  # a plain image measured by --operator (not a measurement file)
    fit: Fit | None = None               # how it was fitted to the prior (--fit), set by run()
    notes: list = dataclasses.field(default_factory=list)  # warnings for the terminal and the sidecar


def load_plain_measurement(path: Path, spec: str) -> "torch.Tensor | tuple[torch.Tensor, dict]":
    """A plain file read as the measurement of ``spec``: an image (PNG/JPEG/TIFF), a real or complex .npy
    (MRI k-space), or a sinogram .npy/.tif ((views, detector) or (C, views, detector))."""
    parsed = operators.parse(spec)
    family = parsed.family
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        if family == "mri" and not np.iscomplexobj(arr):
            raise RestoreError(f"'{path}' holds real values, but MRI k-space is complex; to restore an image, "
                               f"measure it first with 'restore degrade {path.name} --operator {spec}'.")
        if family == "mri" and parsed["accel"] > 1 and not looks_like_kspace(arr):
            raise RestoreError(f"'{path}' holds a complex image, not undersampled k-space (it has no unsampled "
                               f"lines); measure it first with 'restore degrade {path.name} --operator {spec}' and "
                               f"solve the .npz.")
        if np.iscomplexobj(arr) and family != "mri":
            raise RestoreError(f"'{path}' is a complex array; only the mri operator takes complex data.")
        if np.iscomplexobj(arr) or family in ("mri", "ct"):
            t = torch.from_numpy(np.ascontiguousarray(arr))
            t = t[None] if t.dim() == 2 else t
            if t.dim() != 3:
                raise RestoreError(f"'{path}' has shape {tuple(arr.shape)}; a {family} measurement must be 2-D or "
                                   f"(channels, rows, columns).")
            return t.to(torch.complex64 if t.is_complex() else torch.float32)
        return to_tensor(arr, str(path))
    if family == "ct" and path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        t = torch.from_numpy(np.asarray(tifffile.imread(path), dtype=np.float32))
        return t[None] if t.dim() == 2 else t
    image, meta = load_image_meta(path)
    return image, meta


def collect_jobs(inputs: list[str], operator: str | None, noise: str | None, mask: str | None, seed: int,
                 reference: str | None, out: "Path | None" = None) -> list[Job]:
    """The jobs of a run: measurement files, or plain images measured by ``operator``. Folders are walked
    recursively, leaving out ``out`` (the run's output folder) and what restore wrote (see ``find_images``)."""
    spec = operator
    if mask:
        if not Path(mask).is_file():
            raise RestoreError(f"the mask file '{mask}' does not exist; check the path.")
        spec = f"mask:kind=file,file={Path(mask).resolve()}"
    jobs = []
    for path, rel in find_images(inputs, exclude=out):
        if path.stem.endswith("_measurement") and path.with_name(path.stem[:-12] + ".npz").is_file():
            continue  # the preview that 'restore degrade' writes beside each measurement file
        if path.suffix.lower() == ".npz":
            m = load_measurement(path)
            if spec or noise is not None:
                raise RestoreError(f"'{path}' is a measurement file that carries its own operator and noise; drop "
                                   f"--operator/--noise/--mask, or give plain images.")
        else:
            if not spec:
                raise RestoreError(f"'{path}' is a plain image: give --operator SPEC (and --noise) saying how it was "
                                   f"measured, or a measurement file from 'restore degrade'.")
            y = load_plain_measurement(path, spec)
            y, meta = y if isinstance(y, tuple) else (y, {"format": path.suffix.lower().lstrip(".")})
            parsed = operators.parse(spec)
            if parsed.family == "mri" and y.is_complex() and not parsed["complex"] and not parsed["phase"]:
                mask = operators.build(parsed, (1, *y.shape[-2:]), seeds=[image_seed(seed, rel.as_posix())]).mask
                if not is_hermitian(y[None], mask):  # scanner data: the k-space of a complex object
                    parsed = parsed.replace(complex=True)
            shape = operators.OPERATORS[parsed.family].image_shape_for(parsed, tuple(y.shape))
            s = image_seed(seed, rel.as_posix())
            op = operators.build(parsed, shape, seeds=[s])
            try:
                op.check_measurement(y[None])
            except OperatorError as exc:
                raise RestoreError(f"'{path}' does not fit the operator: {exc}") from None
            state = {k: v for k, v in op.state_dict().items()}
            m = Measurement(y=y[None], spec=str(parsed), image_shape=shape, noise=Noise.parse(noise or 0), seed=s,
                            state=state, source="", source_meta=meta)
        job = Job(path, rel, m, plain=path.suffix.lower() != ".npz")
        meta = m.source_meta or {}
        job.notes += list(meta.get("warnings") or ([meta["note"]] if meta.get("note") else []))  # said at degrade
        ref = _reference_for(job, reference)
        if ref is not None:
            job.reference_path = str(ref)
            job.reference = load_image(ref)
            if tuple(job.reference.shape) != tuple(m.image_shape):
                raise RestoreError(f"the reference '{ref}' is {tuple(job.reference.shape)} but the restored image "
                                   f"will be {tuple(m.image_shape)}; give the clean image this was measured from.")
        jobs.append(job)
    return jobs


def _reference_for(job: Job, reference: str | None) -> Path | None:
    if reference:
        r = Path(reference)
        if r.is_dir():
            for suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy"):
                candidate = (r / job.rel).with_suffix(suffix)
                if candidate.is_file():
                    return candidate
            return None
        return r if r.is_file() else None
    if job.m.source and Path(job.m.source).is_file():
        return Path(job.m.source)
    return None


SKIPPED = "skipped: done by an earlier run (--overwrite redoes it)"
#: undersampled k-space (accel ≥ 2) has at least this fraction of exact zeros (an image's background may too) ...
KSPACE_ZEROS = 0.3
#: ... and its magnitude is concentrated at the centre (low frequencies), far more than any image's
KSPACE_CENTRE = 5.0


def looks_like_kspace(arr: np.ndarray) -> bool:
    """Undersampled centred k-space rather than an image: many exact zeros and a bright centre."""
    a = np.abs(arr).reshape(-1, *arr.shape[-2:]).mean(0)
    h, w = a.shape
    rh, rw = max(1, h // 20), max(1, w // 20)
    centre = a[h // 2 - rh:h // 2 + rh + 1, w // 2 - rw:w // 2 + rw + 1].mean()
    return float(np.mean(a == 0)) >= KSPACE_ZEROS and float(centre) >= KSPACE_CENTRE * float(a.mean())
#: the smallest image side a prior restores (an ADM UNet with four levels halves 8 pixels three times)
MIN_SIDE = 8
#: more posterior samples than this is a typing mistake, not a run (each sample costs a full solve)
MAX_SAMPLES = 1000


def check_counts(batch_size: int = 1, samples: int = 1, steps: "int | None" = None) -> None:
    """Refuse counts that cannot be meant, with one sentence each."""
    if batch_size < 1:
        raise RestoreError(f"--batch-size must be at least 1, got {batch_size}.")
    if not 1 <= samples <= MAX_SAMPLES:
        raise RestoreError(f"--samples must be between 1 and {MAX_SAMPLES} (each sample is a full solve), got "
                           f"{samples}.")
    if steps is not None and steps < 1:
        raise RestoreError(f"--steps must be at least 1, got {steps}.")


def std_path(target: Path) -> Path:
    """The per-pixel standard-deviation map written beside a K-sample mean."""
    return target.with_name(target.stem + "_std" + target.suffix)


def _stack_states(cls, states: list[dict]) -> dict:
    out = {}
    for name in states[0]:
        if name in cls.per_image:
            out[name] = torch.cat([s[name] for s in states])
        else:
            out[name] = states[0][name]
    return out


def versions() -> dict:
    from . import __version__

    return {"restore": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def run(jobs: list[Job], solver_name: str, prior_name: "str | object", out: Path, preset: str | None = None,
        steps: int | None = None, samples: int = 1, batch_size: int = 1, device: str = "auto",
        estimate: str = "mean", overwrite: bool = False, lpips_weights: str | None = None,
        progress: Callable[[str, int, int], None] | None = None, out_format: str = "png",
        params: dict | None = None, protect: "list[str | Path]" = (), fit: str | None = None,
        memory_check: bool = True, notify: Callable[[str], None] | None = None,
        shard: tuple[int, int] = (0, 1), accel: "Acceleration | None" = None) -> list[dict]:
    """Solve every job; returns one row per image of this shard in the order of ``jobs`` (status, output, metrics,
    cost), however many were resumed or grouped. ``params`` override single solver parameters on top of the preset
    (``--param KEY=VALUE``); ``fit`` (pad, crop, resize) fits plain images to the prior's size (``restore.fit``).
    Before any work the largest batch's memory is checked against the free memory (``memory_check``) and, through
    ``notify``, a long run says its estimated time. ``samples`` K > 1 draws K posterior samples per image and writes
    their ``estimate`` (mean, median or sample) and a std map; a deterministic solver says so (``notify``) and runs
    once. ``shard`` (i, n) solves only every n-th job from the i-th (torchrun's ranks),
    with outputs named and checked over all jobs. ``accel`` says how the prior's network is evaluated (tiles for
    large images, channels-last, precision, compile: ``restore.acceleration``). No output is written over an input, a
    reference, a file in ``protect`` (e.g. the mask file) or any file restore did not write (see ``restore.outputs``)."""
    import priors

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RestoreError(f"the output '{out}' is a file; give a folder for --out.")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RestoreError("--device cuda was asked for but no CUDA GPU is available; use --device cpu.")
    check_counts(batch_size=batch_size, samples=samples, steps=steps)
    check_estimate(estimate)
    (accel or Acceleration()).check()
    get_solver(solver_name, **(params or {}))  # an unknown solver or parameter is refused before any prior is loaded
    if samples > 1 and not SOLVERS[solver_name].stochastic:
        if notify is not None:
            notify(f"solver '{solver_name}' is deterministic: its {samples} samples would be identical, so it runs "
                   f"once.")
        samples = 1
    rows: list[dict] = []
    todo = []
    # every target is checked before any work: never an input of this run, never a file restore did not write
    guard = OutputGuard([j.source for j in jobs] + [Path(j.reference_path) for j in jobs if j.reference_path]
                        + [Path(p) for p in protect])
    position: dict[str, int] = {}  # the rows come back in the jobs' order, whatever was resumed or grouped
    settings = run_settings(solver_name, prior_name, preset, steps, samples, estimate, params, accel)
    overrides = overrides_of(solver_name, steps, params)
    for k, (job, name) in enumerate(zip(jobs, output_names([j.rel for j in jobs], f".{out_format}"))):
        target = out / name
        position[str(target)] = k
        sidecar = target.with_suffix(".json")
        ours = is_restore_sidecar(sidecar)
        for path in [sidecar, target] + ([std_path(target)] if samples > 1 else []):
            guard.check(path, owned=ours)  # every rank checks every target: all refuse together
        if k % shard[1] != shard[0]:
            continue
        if target.exists() and ours and not overwrite:
            side = read_sidecar(sidecar)
            other = earlier_settings_differ(side, job, settings) or preset_values_differ(side, solver_name, overrides)
            if other:
                raise RestoreError(f"'{target}' was made by an earlier run with other settings ({other}); give "
                                   f"another --out, or --overwrite to redo it with these.")
            rows.append(dict(input=str(job.source), output=str(target), status=SKIPPED, skipped=True))
        else:
            todo.append((job, target))
    if getattr(SOLVERS.get(solver_name), "baseline", False) or not todo:  # pinv and the classical baselines
        prior = None
    else:  # a name or path, resolved here, or a prior object resolved once by the caller (bench)
        prior = priors.resolve(prior_name, device=str(dev)) if isinstance(prior_name, (str, Path)) else prior_name
    evaluation = prepare(prior, dev, accel) if prior is not None else {}
    card = prior.card if prior is not None else None
    todo = [(fit_job(job, card, fit, solver_name), target) for job, target in todo]  # refusals before any work
    groups: dict[tuple, list] = {}
    for job, target in todo:
        key = (job.m.spec, tuple(job.m.image_shape), str(job.m.noise), tuple(job.m.y.shape[1:]))
        groups.setdefault(key, []).append((job, target))
    for (spec, shape, _, _), items in groups.items():
        if memory_check:
            check_memory(shape, min(batch_size, len(items)), card, solver_name, dev, f"'{items[0][0].source}'",
                         tile=evaluation.get("tile"))
    if prior is not None and notify is not None and todo:
        _announce(groups, batch_size, samples, prior, solver_name, preset, steps, params, dev, notify)
    for (spec, shape, noise_text, _), items in groups.items():
        cls = operators.OPERATORS[operators.parse(spec).family]
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            seeds = [j.m.seed for j, _ in chunk]
            y = torch.cat([j.m.y for j, _ in chunk]).to(dev)
            the_prior = prior if prior is not None else _NoPrior(shape[0])
            noise_model = Noise.parse(noise_text)
            y, solve_shape, noise_model, channel_note = _adapt_channels(y, spec, shape, the_prior, noise_model)
            op = operators.build(spec, solve_shape, seeds=seeds, device=dev,
                                 state=_stack_states(cls, [j.m.state for j, _ in chunk]))
            solver = make_solver(solver_name, preset, steps, op, the_prior, params)
            label = ", ".join(str(j.rel) for j, _ in chunk)
            result = solve(solver, y, op, the_prior, seeds, noise=noise_model, samples=samples, estimate=estimate,
                           progress=(lambda i, n, label=label: progress(label, i, n)) if progress else None)
            per_image_seconds = result.cost.seconds / len(chunk)
            fits = data_fit(op, result.x, y, noise_model)
            for i, (job, target) in enumerate(chunk):
                row = dict(input=str(job.source), output=str(target), operator=spec, noise=noise_text,
                           solver=solver_name, preset=solver.preset, seed=job.m.seed,
                           seconds=per_image_seconds, nfe=result.cost.nfe, **fits[i])
                if result.failed[i]:
                    row.update(status="failed", error=result.failed[i])
                    rows.append(row)
                    continue
                restored = result.x[i].cpu()
                std = result.std[i].cpu() if result.std is not None else None
                reference = job.reference
                if restored.shape[0] != shape[0]:  # solved with the prior's channels: back to the input's
                    restored = restored.mean(0, keepdim=True)
                    reference = reference.mean(0, keepdim=True) if reference is not None else None
                if job.fit is not None:  # back from the prior's size (--fit)
                    restored, reference = unfit(restored, job.fit), fit_reference(reference, job.fit)
                    std = unfit(std, job.fit) if std is not None else None
                metrics = _metrics(restored, reference, lpips_weights) if reference is not None else {}
                sidecar = dict(
                    written_by="restore", input=str(job.source), output=str(target),
                    reference=job.reference_path or None,
                    input_values=job.m.source_meta or None,
                    operator=spec, image_shape=list(shape), noise=noise_text, seed=job.m.seed,
                    solver=solver_name, preset=solver.preset, params=result.params,
                    preset_params=solver.params, samples=result.samples,
                    estimate=result.estimate,
                    prior=_prior_info(prior), device=str(dev), evaluation=evaluation or None, versions=versions(),
                    cost=dict(result.cost.to_dict(), batch=len(chunk), seconds_per_image=per_image_seconds),
                    channels=channel_note, fit=job.fit.to_dict() if job.fit else None, warnings=job.notes,
                    data_fit=fits[i],
                    metrics=metrics, date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                # image (+ std map) and sidecar are written together: a failed write (full disk, Ctrl-C) keeps any
                # earlier output as it was, and an image never sits beside a sidecar that describes another run
                files = [target] + ([std_path(target)] if result.std is not None else [])
                with atomic_group(files + [target.with_suffix(".json")]) as tmps:
                    save_image(tmps[0], restored, atomic=False)
                    if std is not None:
                        save_image(tmps[1], std / std.max().clamp_min(1e-12), atomic=False)
                    write_json(tmps[-1], sidecar, atomic=False)
                row.update(status="written", notes=job.notes, **metrics)
                rows.append(row)
    rows.sort(key=lambda r: position[r["output"]])
    return rows


#: operators that act on every channel alike, so a grey measurement can be restored with an RGB prior and back
CHANNELWISE = {"blur", "sr", "mask", "denoise", "hdr"}


def _adapt_channels(y, spec: str, shape, prior, noise):
    """Grey ↔ RGB as the prior needs, for channel-wise operators: a grey measurement is replicated to RGB for an RGB
    prior (the estimate is averaged back to grey), an RGB one averaged to grey for a grey prior (noise σ/√3; the
    output is grey). Other mismatches are left to the solver's check, which refuses them with one sentence."""
    c_img, c_prior = shape[0], prior.card.channels
    family = operators.parse(spec).family
    if c_img == c_prior or prior.card.name == "none" or family not in CHANNELWISE or {c_img, c_prior} != {1, 3}:
        return y, tuple(shape), noise, None
    if c_img == 1:
        note = "grey input replicated to RGB for the RGB prior; the output is the mean of the RGB estimate"
        return y.repeat(1, 3, 1, 1), (3, *shape[1:]), noise, note
    note = "RGB input averaged to grey for the grey prior (noise σ/√3); the output is grey"
    averaged = Noise("gaussian", sigma=noise.sigma / 3**0.5) if noise.kind == "gaussian" else noise
    return y.mean(1, keepdim=True), (1, *shape[1:]), averaged, note


class _NoPrior:
    """Stands in for a prior for the pinv baseline."""

    def __init__(self, channels: int):
        from priors.base import PriorCard

        self.card = PriorCard(name="none", image_size=None, channels=channels, domain="")


def make_solver(name: str, preset: str | None, steps: int | None, op, prior=None, params: dict | None = None):
    probe = get_solver(name)
    chosen = preset or probe.auto_preset(op, prior)
    overrides = dict(params or {})
    if steps is not None:
        key = getattr(probe, "steps_param", "steps")  # DAPS: the number of annealing levels
        if key not in probe.defaults:
            raise RestoreError(f"solver '{name}' has no --steps parameter; choose one of its presets with --preset.")
        overrides[key] = steps
    return get_solver(name, preset=chosen, **overrides)


def parse_params(items: "list[str] | None") -> dict:
    """``KEY=VALUE`` items (``--param``) → a dict of strings; the solver casts each to its parameter's type."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RestoreError(f"--param takes KEY=VALUE (e.g. scale=0.3), got '{item}'.")
        out[key.strip()] = value.strip()
    return out


#: runs estimated to take longer than this say so before they start
ANNOUNCE_SECONDS = 30.0


def _announce(groups, batch_size, samples, prior, solver_name, preset, steps, params, dev, notify) -> None:
    """Say the estimated time of a long run before it starts (one timed network evaluation per image size)."""
    total, images = 0.0, 0
    for (spec, shape, _, _), items in groups.items():
        op = operators.build(spec, shape, seeds=[items[0][0].m.seed], device=dev, state=items[0][0].m.state)
        nfe = expected_nfe(make_solver(solver_name, preset, steps, op, prior, params).params)
        batch = min(batch_size, len(items))
        batches = -(-len(items) // batch)
        total += seconds_per_evaluation(prior, (prior.card.channels, *shape[1:]), batch, dev) * nfe * samples * batches
        images += len(items)
    if total > ANNOUNCE_SECONDS:
        notify(f"estimated time: about {duration(total)} for {images} image{'s' * (images > 1)} "
               f"({solver_name}, {samples} sample{'s' * (samples > 1)} each); Ctrl-C stops it, and a rerun resumes.")


def magnitude_job(job: Job) -> Job:
    """A complex MRI measurement is solved for the magnitude |x| of its image, which is what the (real) priors
    restore: x ≈ |x|·e^{iφ} with the phase φ of the low-resolution image from the always-sampled centre of k-space
    (``operators.mri.lowres_phase``), i.e. the real-image operator y = M ⊙ F(e^{iφ}·|x|) (``phase=true``). Single
    coil, one channel; DDNM, which needs an SVD, is refused for it (the others need only A and Aᴴ)."""
    parsed = operators.parse(job.m.spec)
    if parsed.family != "mri" or not parsed["complex"]:
        return job
    if parsed["coils"] > 1 or parsed["coil_file"] or job.m.image_shape[0] != 1:
        raise RestoreError(f"'{job.source}' holds complex multi-coil or multi-channel MRI data, which restore "
                           f"solves only for single-coil, one-channel images so far.")
    phase = lowres_phase(job.m.y, parsed)
    spec = str(parsed.replace(complex=False, phase=True))
    m = dataclasses.replace(job.m, spec=spec, state={"mask": job.m.state["mask"], "coil_maps": phase[:, :1]})
    note = ("complex MRI data: restored as the magnitude |x| with the phase of the low-resolution centre of k-space "
            "(x ≈ |x|·e^{iφ})")
    return dataclasses.replace(job, m=m, notes=job.notes + [note])


def run_settings(solver_name: str, prior_name, preset: str | None, steps: int | None, samples: int, estimate: str,
                 params: dict | None, accel: "Acceleration | None") -> list[tuple]:
    """What a run's sidecars must record for its existing outputs to be resumed, as (what, sidecar path, value)
    triples, worked out once per run (``earlier_settings_differ`` compares them per output): samples and estimate,
    and for a diffusion solver the prior (name, and its weights' hash where the name is an embedded prior), an explicit
    preset, --steps, each --param and --equivariant."""
    cls = SOLVERS[solver_name]
    want = [("solver", ("solver",), solver_name), ("samples", ("samples",), samples)]
    if samples > 1:
        want.append(("estimate", ("estimate",), estimate))
    if getattr(cls, "baseline", False):
        return want
    card = getattr(prior_name, "card", None)
    if card is None and isinstance(prior_name, str):
        from priors.registry import embedded_cards

        card = embedded_cards().get(prior_name, (None,))[0]
    if card is not None:
        want.append(("prior", ("prior", "name"), card.name))
        if card.sha256:
            want.append(("prior weights (sha256)", ("prior", "sha256"), card.sha256))
    if preset:
        want.append(("preset", ("preset",), preset))
    overrides = overrides_of(solver_name, steps, params)
    wanted = get_solver(solver_name, **overrides).params
    want += [(key, ("params", key), wanted[key]) for key in overrides]
    want.append(("--equivariant", ("evaluation", "equivariant"), (accel or Acceleration()).equivariant))
    return want


def overrides_of(solver_name: str, steps: int | None, params: dict | None) -> dict:
    """The parameters a run sets on top of the preset: each ``--param`` and ``--steps``."""
    overrides = dict(params or {})
    key = getattr(SOLVERS[solver_name], "steps_param", "steps")
    if steps is not None and key:
        overrides[key] = steps
    return overrides


def read_sidecar(sidecar: Path) -> dict | None:
    """An earlier output's sidecar, or None when it cannot be read as JSON."""
    try:
        return json.loads(Path(sidecar).read_text())
    except (OSError, ValueError):
        return None


def preset_values_differ(side: dict | None, solver_name: str, overrides: dict) -> str | None:
    """How the parameters an earlier run set (its preset's values with its overrides, the sidecar ``side``'s
    ``preset_params``) differ from what the same preset and this run's overrides give in this version of restore, in a
    few words; None if they are equal, or if the sidecar predates the record (or is a baseline's). So an output made
    before a preset was retuned, or with a --param or --steps this run does not give, is not resumed as if it were
    made with this run's values."""
    stored = (side or {}).get("preset_params")
    if not isinstance(stored, dict) or getattr(SOLVERS.get(solver_name), "baseline", False):
        return None
    preset = side.get("preset") or None
    try:
        now = json.loads(json.dumps(get_solver(solver_name, preset=preset, **overrides).params, default=str))
    except SolverError:
        return f"preset {preset!r} there, which this version of restore does not have"
    for key in sorted(set(stored) | set(now)):
        if stored.get(key) != now.get(key):
            return f"parameter {key} {stored.get(key)!r} there, {now.get(key)!r} now"
    return None


def earlier_settings_differ(side: dict | None, job: Job, settings: list[tuple]) -> str | None:
    """How the earlier run whose sidecar is ``side`` differs from this one (``run_settings``, and the job's operator,
    seed and noise unless the image was fitted), in a few words; None for the same settings. So a resumed run never
    passes off an output made another way as its own. A sidecar without a hash or --equivariant (older runs) counts
    as having the same hash and --equivariant off."""
    if side is None:
        return None
    checks = [("operator", ("operator",), job.m.spec), ("seed", ("seed",), job.m.seed)]
    if not side.get("fit"):
        checks.append(("noise", ("noise",), str(job.m.noise)))
    for what, path, new in settings + checks:
        old = side
        for key in path:
            old = old.get(key) if isinstance(old, dict) else None
        if old is None and path == ("evaluation", "equivariant"):
            old = "off"
        if old is None and path == ("prior", "sha256"):
            continue
        if old != new:
            if path == ("prior", "sha256"):
                old, new = old[:12], new[:12]
            return f"{what} {old!r} there, {new!r} now"
    return None


def fit_job(job: Job, card, mode: "str | None", solver_name: str) -> Job:
    """The job as it will be solved: refused (one sentence) if the prior cannot take the image, fitted to the prior
    with ``--fit`` (see ``restore.fit``), and with a note when the image is at a scale the prior never saw."""
    job = magnitude_job(job)
    if card is None:  # pinv and the classical baselines need no prior: any size
        return job
    shape = tuple(job.m.image_shape)
    if min(shape[1:]) < MIN_SIDE:
        raise RestoreError(f"'{job.source}' makes a {shape[1]}×{shape[2]} image, smaller than the "
                           f"{MIN_SIDE}×{MIN_SIDE} that prior '{card.name}' can restore; give a larger image.")
    fit = plan_fit(card, job.m.spec, shape, mode, plain=job.plain)
    if fit is None:
        warning = scale_warning(card, shape)
        return job if warning is None else dataclasses.replace(job, notes=job.notes + [warning])
    y, noise = fit_measurement(job.m.y, fit, job.m.spec, job.m.noise)
    op = operators.build(job.m.spec, fit.fitted_shape, seeds=[job.m.seed])
    m = dataclasses.replace(job.m, y=y, image_shape=fit.fitted_shape, noise=noise, state=dict(op.state_dict()))
    return dataclasses.replace(job, m=m, fit=fit, notes=job.notes + [fit.note()])


@torch.no_grad()
def data_fit(op, x01: torch.Tensor, y: torch.Tensor, noise) -> list[dict]:
    """Per image: the data misfit ‖A x̂ − y‖/‖y‖ of the estimate (on [0, 1]) and, beside it, the misfit the noise
    alone gives, σ·√m/‖y‖ over the m measured entries (2m real numbers for complex data): an estimate far below the
    noise level fits the noise, one far above it ignores the data. The operator is applied to the whole batch (its
    parameters may differ per image)."""
    finite = torch.isfinite(x01.reshape(x01.shape[0], -1)).all(dim=1)
    x = torch.where(finite.view(-1, *([1] * (x01.dim() - 1))), x01, torch.zeros_like(x01)).to(y.device)
    try:
        residual = op.A(x.to(op.image_dtype) if hasattr(op, "image_dtype") else x) - y
    except Exception:  # noqa: BLE001 - an operator that cannot take the estimate: no misfit
        return [{"misfit": None, "noise_level": None} for _ in range(y.shape[0])]
    mask = op.noise_mask() if hasattr(op, "noise_mask") else None
    sigma = float(getattr(noise, "std", 0.0) or 0.0)
    out = []
    for i in range(y.shape[0]):
        if not bool(finite[i]):
            out.append({"misfit": None, "noise_level": None})
            continue
        yi = y[i:i + 1]
        norm_y = float(torch.linalg.vector_norm(yi).clamp_min(1e-30))
        if mask is not None:  # one mask per image, or one for all
            mi = mask[i:i + 1] if mask.shape[0] == y.shape[0] else mask[:1]
            m = float(torch.broadcast_to(mi, yi.shape).sum())
        else:
            m = yi.numel()
        m *= 2 if yi.is_complex() else 1
        out.append({"misfit": float(torch.linalg.vector_norm(residual[i])) / norm_y,
                    "noise_level": sigma * math.sqrt(m) / norm_y})
    return out


def _prior_info(prior) -> dict:
    if prior is None:
        return {"name": "none"}
    card = prior.card
    return {"name": card.name, "sha256": card.sha256, "domain": card.domain, "latent": card.latent}


def _metrics(estimate: torch.Tensor, reference: torch.Tensor, lpips_weights: str | None) -> dict:
    from .lpips_metric import lpips_or_reason

    out = {"psnr": psnr(estimate, reference), "ssim": ssim(estimate, reference),
           "rel_l2": float(torch.linalg.vector_norm(estimate - reference)
                           / torch.linalg.vector_norm(reference).clamp_min(1e-12))}
    value, reason = lpips_or_reason(estimate, reference, weights=lpips_weights, download=False)
    out["lpips"] = value
    if reason:
        out["lpips_unavailable"] = reason
    return out


def task_label(spec: str) -> str:
    return task_of(operators.parse(spec))


__all__ = ["Job", "collect_jobs", "run", "versions"]
