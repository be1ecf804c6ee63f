"""Weight files at the lowest level: reading a checkpoint's tensors safely, loading a state dict exactly, and writing
a reproducible .safetensors (no other prior module is imported here, so every module can use it).

* ``.safetensors`` files are read with safetensors (no code can run);
* ``.pt``/``.pth``/``.ckpt`` files with ``torch.load(weights_only=True)``: a pickle that would run code is refused;
* a state dict must match its architecture exactly (``strict=True``): a wrong key or shape is an error naming the
  first differences, never a silent random initialisation;
* a truncated or corrupt file is reported as such, with the fix (download it again / check the path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from .adm import state_dict_mismatch
from .card import PriorError

WRAPPER_KEYS = ("ema", "model_ema", "state_dict", "model")


def read_state_dict(path: "str | Path") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a checkpoint file; metadata is the safetensors header metadata ({} for .pt)."""
    path = Path(path)
    if not path.exists():
        raise PriorError(f"the checkpoint '{path}' does not exist; check the path or fetch it with "
                         f"'restore prior fetch NAME'.")
    if path.is_dir():
        raise PriorError(f"'{path}' is a folder; give a .safetensors/.pt file (diffusers folders need the "
                         f"'diffusers' extra).")
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - any header/payload failure means a damaged file
            raise PriorError(f"'{path}' ({size} bytes) is not a readable safetensors file ({_short(exc)}); it is "
                             f"truncated or corrupt: download or export it again.") from None
        return tensors, metadata
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise PriorError(f"'{path}' is a pickle that asks to run code or build arbitrary objects, which restore "
                             f"refuses for safety; convert it to safetensors on a machine you trust.") from None
        raise PriorError(f"'{path}' ({size} bytes) cannot be read as a PyTorch checkpoint ({_short(exc)}); it is "
                         f"truncated or corrupt: download it again.") from None
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PriorError(f"'{path}' does not hold a state dict of tensors; give the model's weights file.")
    return {k.removeprefix("module."): v for k, v in obj.items()}, {}


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, fix: str,
                what: str = "") -> torch.nn.Module:
    """Load ``state`` into ``model`` exactly (every key, every shape) or refuse with the first differences and
    ``fix``; never a partial load or a silent random initialisation. ``what`` starts the refusal (default:
    "'SOURCE' does not match the architecture it is loaded as")."""
    expected = model.state_dict()
    problems = state_dict_mismatch(expected, state)
    if problems:
        what = what or f"'{source}' does not match the architecture it is loaded as"
        raise PriorError(f"{what}: {'; '.join(problems[:3])}; {fix}.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.eval()


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a .safetensors file atomically and byte-for-byte reproducibly: safetensors serialises its metadata from
    a hash map in random order, so the same weights could get another sha256; the header is rewritten with the
    metadata keys sorted."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.write(memoryview(raw)[8 + n:])
    os.replace(tmp, path)
