"""Reading checkpoints exactly, or refusing them with one clear sentence.

* ``.safetensors`` files are read with safetensors (no code can run);
* ``.pt``/``.pth``/``.ckpt`` files with ``torch.load(weights_only=True)``: a pickle that would run code is refused;
* a state dict must match its architecture exactly (``strict=True``): a wrong key or shape is an error naming the
  first differences, never a silent random initialisation;
* a truncated or corrupt file is reported as such, with the fix (download it again / check the path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from .adm import ADMConfig, ADMStateDictError, ADMUNet, infer_config, state_dict_mismatch
from .base import DiffusionPrior, PriorCard, PriorError, sha256_file

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


def load_adm(state: Mapping[str, torch.Tensor], config: ADMConfig | None, source: str) -> ADMUNet:
    """An ADMUNet holding ``state`` exactly (config given, or inferred from the shapes)."""
    if config is None:
        try:
            config = infer_config(state, image_size=256)
        except ADMStateDictError as exc:
            raise PriorError(f"'{source}' is not a guided-diffusion (ADM) UNet checkpoint ({exc}); give an ADM "
                             f"checkpoint or a diffusers folder.") from None
    return load_strict(ADMUNet(config), state, source, "check the --config or use the checkpoint the config was "
                                                       "made for")


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, fix: str) -> torch.nn.Module:
    """Load ``state`` into ``model`` exactly (every key, every shape) or refuse with the first differences and
    ``fix``; never a partial load or a silent random initialisation."""
    expected = model.state_dict()
    problems = state_dict_mismatch(expected, state)
    if problems:
        raise PriorError(f"'{source}' does not match the architecture it is loaded as: {'; '.join(problems[:3])}; "
                         f"{fix}.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.eval()


def load_prior_file(path: "str | Path", config: ADMConfig | None = None, card: PriorCard | None = None,
                    verify_hash: str = "") -> DiffusionPrior:
    """A DiffusionPrior from an ADM checkpoint file (.safetensors written by ``restore prior train``, or a
    guided-diffusion .pt), or a ``LatentPrior`` when the card (or the file's metadata) says latent. The model card is
    read from ``card``, or ``PATH.json`` beside the weights if present."""
    path = Path(path)
    if verify_hash:
        digest = sha256_file(path)
        if digest != verify_hash:
            raise PriorError(f"'{path}' has sha256 {digest[:12]}… but {verify_hash[:12]}… was expected; the file is "
                             f"damaged or a different version: fetch it again.")
    tensors, metadata = read_state_dict(path)
    card_path = path.with_suffix(".json")
    if card is None and card_path.is_file():
        card = PriorCard.from_dict(json.loads(card_path.read_text()))
    if (card is not None and card.latent) or metadata.get("format") == "restore-latent":
        from .latent import latent_prior_from_state  # autoencoder + latent ADM UNet in one file

        return latent_prior_from_state(tensors, metadata, card, str(path), config)
    if config is None and card is not None and card.architecture.get("kind") == "adm":
        config = ADMConfig.from_dict({k: v for k, v in card.architecture.items() if k != "kind"})
    if config is None and "adm" in metadata:
        config = ADMConfig.from_dict(json.loads(metadata["adm"]))
    net = load_adm(tensors, config, str(path))
    if card is not None and card.parameterisation == "edm":  # trained with --precond edm: the wrapper gives ε̂
        from .base import SCHEDULES
        from .precond import SIGMA_DATA, EDMPrecond

        betas = SCHEDULES[card.schedule](card.timesteps)
        net = EDMPrecond(net, torch.cumprod(1 - betas, 0), float(card.extra.get("sigma_data", SIGMA_DATA)))
    elif card is not None and card.parameterisation != "eps":
        raise PriorError(f"prior '{card.name}' has parameterisation '{card.parameterisation}'; restore reads 'eps' "
                         f"and 'edm' priors: convert it or check its model card.")
    if card is None:
        card = PriorCard(name=path.stem, image_size=None, channels=net.cfg.in_channels, domain="unknown",
                         learned_variance=net.cfg.learn_sigma, architecture={"kind": "adm", **net.cfg.to_dict()})
    return DiffusionPrior(net, card)
