"""How the prior's network is evaluated: tiles for large images, memory order, precision, compilation.

``prepare(prior, device, Acceleration(...))`` sets a pixel prior's evaluation settings once, at the command line's
edge (``restore solve`` and ``restore bench``); solvers never see them. Measured on the 2-core AVX2 build machine
(``benchmarks/cpu_speed.py``, docs/benchmarks.md):

* **channels-last** memory order: the natural prior's network 1.1× faster at 256², 1.27× at 512² (oneDNN's
  convolutions prefer NHWC); on by default on the CPU, outputs equal to float round-off (≈1e-5 on ε̂).
* **tiles**: an any-size convolutional prior evaluates an image whose side exceeds ``tile`` in overlapping tiles
  blended with linear ramps (``priors.base.tiled``), so memory is bounded by one tile whatever the photo's size. Off for
  fixed-size and latent priors (their images are their native size).
* **bf16** autocast: on CUDA, and on CPUs with native bfloat16 (AVX512-BF16 or AMX); refused elsewhere, where oneDNN
  emulates it (the natural prior's network took 91 s instead of 0.35 s on the AVX2 build machine).
* **TF32** matmuls and convolutions: CUDA only.
* ``torch.compile`` (inductor): off by default; on this CPU it compiled for 40–76 s and then ran at 0.8–1.0× the
  eager time (the network already runs at ~75 % of the machine's matrix-multiply peak), so it pays off only where
  its kernels are faster (GPUs) and the run is long.

One setting here is not an acceleration but is set at the same edge: **--equivariant** averages a pixel prior's
network over flips (and quarter turns) of the image (``priors.base.SYMMETRIES``), at 2× or 8× the time, or with one
symmetry per step at none. It changes the results (+0.12–0.15 dB for the ``natural`` prior as a denoiser, at most
+0.07 dB in the samplers; docs/priors.md), so it is off by default and recorded in every sidecar that uses it.
"""

from __future__ import annotations

import dataclasses
import shutil

import torch

from .errors import RestoreError

PRECISIONS = ("fp32", "tf32", "bf16")
#: a tile smaller than this leaves the network too little context (its receptive field is about 100 pixels)
MIN_TILE = 64


@dataclasses.dataclass(frozen=True)
class Acceleration:
    tile: int = 1024              # largest tile side for any-size priors (0: whole images, however large)
    overlap: int = 32             # tiles overlap by at least this (pixels)
    precision: str = "fp32"       # fp32 | tf32 (CUDA) | bf16 (CUDA, or a CPU with native bfloat16)
    compile: bool = False         # torch.compile the network
    channels_last: str = "auto"   # auto (on the CPU, and with bf16 on CUDA) | on | off
    equivariant: str = "off"      # off | flips | dihedral, optionally ":step" (see priors.base.SYMMETRIES)

    def symmetries(self) -> tuple[str | None, str]:
        """(group name or None, "mean" or "step") of ``equivariant``."""
        name, _, mode = self.equivariant.partition(":")
        return (None if name == "off" else name), (mode or "mean")

    def check(self) -> None:
        from priors.base import SYMMETRIES

        name, mode = self.symmetries()
        if (name is not None and name not in SYMMETRIES) or mode not in ("mean", "step") or \
                (name is None and self.equivariant != "off"):
            raise RestoreError(f"--equivariant must be off, {', '.join(SYMMETRIES)}, or one of those followed by "
                               f"':step' (e.g. dihedral:step); got '{self.equivariant}'.")
        if self.precision not in PRECISIONS:
            raise RestoreError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'.")
        if self.channels_last not in ("auto", "on", "off"):
            raise RestoreError(f"channels_last must be auto, on or off, got '{self.channels_last}'.")
        if self.tile and (self.tile < MIN_TILE or self.overlap < 0 or self.tile <= 2 * self.overlap):
            raise RestoreError(f"--tile must be 0 (no tiles) or at least {MIN_TILE} and more than twice the overlap "
                               f"({self.overlap}); got {self.tile}.")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX) rather than emulating it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - an older or oneDNN-less build: assume not
        return False


def _adm_like(net) -> bool:
    """A convolutional network restore knows (an ADM UNet, possibly preconditioned or compiled)."""
    return getattr(getattr(net, "cfg", None), "size_multiple", None) is not None


def prepare(prior, device: torch.device, accel: Acceleration | None = None) -> dict:
    """Set ``prior``'s evaluation settings for ``device`` (idempotent) and return them, for the run's records."""
    from priors.base import SYMMETRIES

    accel = accel or Acceleration()
    accel.check()
    if prior is None or not hasattr(prior, "channels_last"):
        return {}
    group, mode = accel.symmetries()
    if group is not None and prior.card.latent:
        raise RestoreError(f"--equivariant averages a pixel prior over flips and rotations of the image; "
                           f"'{prior.card.name}' is a latent prior, whose latent grid has no such symmetry: use "
                           f"--equivariant off.")
    prior.symmetries = SYMMETRIES[group] if group else None
    prior.symmetry_mode = mode
    records = {"equivariant": accel.equivariant} if group else {}
    if not _adm_like(getattr(prior, "net", None)):
        return records
    cuda = device.type == "cuda"
    if accel.precision == "bf16" and not cuda and not cpu_has_native_bf16():
        raise RestoreError("this CPU has no native bfloat16 (AVX512-BF16 or AMX), so bf16 would run many times "
                           "slower than float32; use --precision fp32.")
    if accel.precision == "tf32" and not cuda:
        raise RestoreError("--precision tf32 is for NVIDIA GPUs; on the CPU use --precision fp32.")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = accel.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = accel.precision == "tf32"
    prior.autocast_dtype = torch.bfloat16 if accel.precision == "bf16" else None
    channels_last = {"on": True, "off": False}.get(accel.channels_last, not cuda or accel.precision == "bf16")
    if channels_last != prior.channels_last:
        prior.net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        prior.channels_last = channels_last
    any_size = bool(prior.card.extra.get("any_size")) and not prior.card.latent
    prior.tile = accel.tile if (accel.tile and any_size) else None
    prior.tile_overlap = accel.overlap
    if accel.compile and not getattr(prior, "compiled", False):
        if not cuda and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
            raise RestoreError("--compile on the CPU needs a C++ compiler (g++ or clang++) on the PATH; install one "
                               "or leave out --compile.")
        prior.net = torch.compile(prior.net, dynamic=False)
        prior.compiled = True
    return dict(channels_last=channels_last, tile=prior.tile, tile_overlap=prior.tile_overlap if prior.tile else None,
                precision=accel.precision, compile=bool(getattr(prior, "compiled", False)),
                **records)
