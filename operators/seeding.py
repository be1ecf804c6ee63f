"""Per-image random streams.

Every random draw (operator parameters, measurement noise, solver noise) comes from a ``torch.Generator`` seeded
from the image's own seed and the name of the stream, so that a result depends only on (image, spec, seed) and not
on the batch size or the order of images. Draws are made on the CPU and moved to the target device, so the same
seed gives the same numbers on every device.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed derived from an image seed and a stream name ("operator", "noise", "solver", ...)."""
    digest = hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ImageGenerators(list):
    """One CPU ``torch.Generator`` per image of a batch, drawn from as one object (the idea of EDM's
    ``StackedRandomGenerator``): image i's noise always comes from ``self[i]``, so an image's result does not depend
    on the batch it is in, on the device, or on what other code draws from torch's global generator."""

    def randn(self, shape: Sequence[int], device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal noise of ``shape`` = (B, ...) with B = len(self), drawn on the CPU, then moved."""
        rows = [torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in self]
        return torch.stack(rows).to(device=device, dtype=dtype)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like the batch ``x`` (its device and dtype)."""
        return ImageGenerators.randn(self, x.shape, device=x.device, dtype=x.dtype)


def generators(seeds: Sequence[int], stream: str) -> ImageGenerators:
    """One CPU generator per image for the named stream."""
    out = ImageGenerators()
    for s in seeds:
        g = torch.Generator(device="cpu")
        g.manual_seed(stream_seed(s, stream))
        out.append(g)
    return out


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A NumPy generator whose state is drawn from (and advances) a torch generator."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def randn(shape: Sequence[int], gens: Sequence[torch.Generator], dtype=torch.float32, device=None) -> torch.Tensor:
    """A (len(gens), *shape) standard normal tensor, row i drawn from gens[i]."""
    rows = [torch.randn(tuple(shape), generator=g, dtype=dtype) for g in gens]
    return torch.stack(rows).to(device) if device is not None else torch.stack(rows)


def rand(shape: Sequence[int], gens: Sequence[torch.Generator], dtype=torch.float32, device=None) -> torch.Tensor:
    rows = [torch.rand(tuple(shape), generator=g, dtype=dtype) for g in gens]
    return torch.stack(rows).to(device) if device is not None else torch.stack(rows)
