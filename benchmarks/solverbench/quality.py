"""The quality and overhead runs (each solver × task through ``restore.solve.run``, timed against bare evaluations)
and batch throughput."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from operators import Noise, OperatorError
from restore.degrade import degrade_one, image_seed
from restore.io import RestoreError, load_image, preview, save_image
from restore.solve import Job, make_solver, fit_job, run
from restore.solvers import SolverError

from .presets import BACKPROP, select_images, solver_of, task_spec
from .timing import (
    AutoencoderCounter, backprop_evals, bare_autoencoder_times, bare_eval_times, mean_bare, network_seconds,
    state_shape,
)


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
        solver = make_solver(name, preset, steps, op, prior, params)
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
