"""Speed at the papers' scale: the FFHQ-256 ADM architecture with random weights, on a GPU (``--sections gpu``) or
the CPU (``--sections scale``), and the machine description."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from operators import Noise
from restore.io import RestoreError, load_image
from restore.solvers import SolverError, get_solver, solve
import operators

from .presets import BACKPROP, LATENT_LABELS, select_images, solver_of, task_spec
from .timing import backprop_evals, bare_eval_times, mean_bare, network_seconds


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
    """(setup, per-step) seconds of the line through two short runs; a negative setup (timing noise) counts as 0, and
    so does the setup when the longer run measured no slower (a busy machine): then per step = its seconds / steps."""
    (k1, t1), (k2, t2) = ((p["steps"], p["seconds"]) for p in points)
    per_step = (t2 - t1) / (k2 - k1)
    if per_step <= 0:
        return 0.0, t2 / k2
    return max(t1 - per_step * k1, 0.0), per_step


def extrapolate(points: list[dict], field: str, steps: int) -> float:
    """``field`` at ``steps`` on the line through two short runs (a once-per-run part, e.g. DPS's operator-norm
    estimate on CT, is counted once, not once per step)."""
    (k1, v1), (k2, v2) = ((p["steps"], p[field]) for p in points)
    if "seconds" in field and 0 < v2 <= v1:  # timing noise: the longer run took no longer; scale it instead
        return v2 / k2 * steps
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
