"""Before any work: how much memory and time a run will take, refused when it cannot fit.

Memory is estimated per batch from the pixels solved and per-pixel costs measured on this project's networks
(``natural`` prior, 32 base channels, 512×512, one evaluation at the CPU, peak resident memory): about 1.8 kB per
pixel for a forward pass without gradients and 8.4 kB with backpropagation through the network (DPS, ReSample),
scaled by the network's width (base channels / 32) and its channel count; every solver also keeps a few dozen
image-sized float32 buffers (the operator, the estimate, noise, the measurement), counted for ``pinv`` too. A run
whose largest batch needs more than the memory free now (``MemAvailable``, or the GPU's free memory) is refused
with the numbers and the way out (smaller --batch-size, a smaller image, or ``--no-memory-check`` to try anyway).

Time is estimated by timing one network evaluation on the first batch's size and multiplying by the preset's
network evaluations, the samples and the batches.
"""

from __future__ import annotations

import time

import torch

from .errors import RestoreError

#: bytes per pixel of a 32-channel-wide network evaluation (measured, see the module docstring)
NETWORK_BYTES_PER_PIXEL = 2048
BACKPROP_BYTES_PER_PIXEL = 9000
#: image-sized float32 buffers a solver (or pinv, with reading and writing) keeps per channel
IMAGE_BUFFERS = 24
#: solvers that backpropagate through the network (the others never do)
BACKPROP_SOLVERS = {"dps", "resample"}


def memory_needed(shape, batch: int, card, solver_name: str, tile: int | None = None) -> int:
    """Bytes one batch of ``batch`` images of ``shape`` (C, H, W) needs, roughly; with ``tile`` the network sees one
    tile (at most tile × tile pixels) at a time."""
    channels, h, w = shape
    pixels = h * w * batch
    need = pixels * channels * 4 * IMAGE_BUFFERS
    if tile:
        pixels = min(h, tile) * min(w, tile) * batch
    if solver_name != "pinv" and card is not None:
        width = float((card.architecture or {}).get("num_channels", 32)) / 32
        per_pixel = BACKPROP_BYTES_PER_PIXEL if solver_name in BACKPROP_SOLVERS else NETWORK_BYTES_PER_PIXEL
        down = int((card.extra or {}).get("downsample", 1)) if card.latent else 1
        need += int(pixels / down**2 * per_pixel * width)
    return int(need)


def memory_free(device: torch.device) -> "int | None":
    """Bytes free now on ``device`` (None when unknown)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no CUDA context: unknown
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def check_memory(shape, batch: int, card, solver_name: str, device: torch.device, what: str,
                 tile: int | None = None) -> None:
    need, free = memory_needed(shape, batch, card, solver_name, tile), memory_free(device)
    if free is not None and need > free:
        hint = "a smaller --batch-size, " if batch > 1 else ""
        raise RestoreError(f"restoring {what} ({shape[1]}×{shape[2]}, batch {batch}) with {solver_name} needs about "
                           f"{gb(need)} of memory but {gb(free)} is free; use {hint}a smaller image, or "
                           f"--no-memory-check to try anyway.")


def expected_nfe(params: dict) -> int:
    """Network evaluations of one solve from the solver's parameters (an estimate: DAPS levels × ODE steps, else
    its steps)."""
    if "annealing_steps" in params and "ode_steps" in params:
        return int(params["annealing_steps"]) * int(params["ode_steps"])
    for key in ("steps", "num_steps", "timesteps"):
        if key in params:
            return int(params[key])
    return 0


@torch.no_grad()
def seconds_per_evaluation(prior, shape, batch: int, device: torch.device) -> float:
    """Time of one network evaluation on a batch of this shape (one warm-up-free call: an estimate)."""
    net_shape = shape
    if prior.card.latent:
        down = int(prior.card.extra.get("downsample", 4))
        net_shape = (prior.card.extra.get("latent_shape", [4])[0], shape[1] // down, shape[2] // down)
    x = torch.zeros(batch, *net_shape, device=device)
    start = time.perf_counter()
    prior.model_output(x, torch.full((batch,), 500.0, device=device))
    return time.perf_counter() - start


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
