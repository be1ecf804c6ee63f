"""A prior's model card and the prior error type: plain Python (no torch), so that listing and showing priors, and
the command line's error handling, start fast."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any


class PriorError(ValueError):
    """A user-facing problem with a prior or checkpoint: one sentence naming the problem and the fix."""


def sha256_file(path: "str | Path") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass
class PriorCard:
    """Metadata carried by every prior (and written as its model card)."""

    name: str
    image_size: int | None          # native resolution (None: any size the network's downsampling divides)
    channels: int
    domain: str                     # what the images are: "faces", "natural photographs", "brain MRI", ...
    schedule: str = "linear"        # key of SCHEDULES
    timesteps: int = 1000
    parameterisation: str = "eps"
    learned_variance: bool = False
    value_range: str = "[-1, 1]"
    latent: bool = False
    training_data: str = ""
    licence: str = ""
    sha256: str = ""
    architecture: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PriorCard":
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        card = cls(**known)
        card.extra.update(extra)
        return card
