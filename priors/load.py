"""A prior from a weight file: an ADM UNet (its config from the model card, the file's metadata or the tensor shapes),
EDM-preconditioned when its card says so, or a latent prior (autoencoder + latent UNet in one file). The file-level
rules (safe reading, exact state dicts, clear refusals) are ``priors.weights``'s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import Tensor

from .adm import ADMConfig, ADMStateDictError, ADMUNet, infer_config
from .base import DiffusionPrior, PriorCard, PriorError, sha256_file
from .weights import WRAPPER_KEYS, _short, load_strict, read_state_dict  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from .latent import LatentPrior


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


# ---------------------------------------------------------------------------------------------------------------------
# latent priors (autoencoder + latent ADM UNet in one file)


def latent_prior_from_state(tensors: Mapping[str, Tensor], metadata: Mapping[str, str], card: PriorCard | None,
                            source: str, config: ADMConfig | None = None) -> LatentPrior:
    """A ``LatentPrior`` from the tensors of a ``train_latent_prior`` file (what ``load_prior_file`` dispatches to)."""
    from .autoencoder import _strict_autoencoder
    from .latent import LatentPrior

    net_state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    ae_state = {k[12:]: v for k, v in tensors.items() if k.startswith("autoencoder.")}
    if not net_state or not ae_state:
        raise PriorError(f"'{source}' is marked as a latent prior but does not hold both networks (net.* and "
                         f"autoencoder.* keys); export it with priors.latent_train.train_latent_prior.")
    other = [k for k in tensors if not k.startswith(("net.", "autoencoder."))]
    if other:
        raise PriorError(f"'{source}' has unexpected keys besides net.* and autoencoder.* ({', '.join(other[:3])}); "
                         f"export it again.")
    arch = card.architecture if card is not None else {}
    if config is None:
        adm = arch.get("adm") or (json.loads(metadata["adm"]) if "adm" in metadata else None)
        config = ADMConfig.from_dict(adm) if adm is not None else None
    ae_arch = arch.get("autoencoder") or (json.loads(metadata["autoencoder"]) if "autoencoder" in metadata else None)
    if config is None or ae_arch is None:
        raise PriorError(f"'{source}' is a latent prior without its architecture (no model card beside it and no "
                         f"metadata); put its .json card next to it.")
    net = load_adm(net_state, config, source)
    ae = _strict_autoencoder(ae_state, ae_arch, source)
    if card is None:
        card = PriorCard(name=Path(source).stem, image_size=None, channels=ae.cfg.in_channels, domain="unknown",
                         schedule="ldm-linear", latent=True,
                         architecture={"kind": "latent", "adm": config.to_dict(),
                                       "autoencoder": {"kind": "restore-kl", **ae.cfg.to_dict()}})
    scale = card.extra.get("scale_factor", float(metadata.get("scale_factor", 1.0)))
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise PriorError(f"'{source}' has an invalid latent scale factor {scale!r}; export it again.")
    shift = float(card.extra.get("shift_factor", 0.0))
    return LatentPrior(net, card, ae, scale_factor=scale, shift_factor=shift).eval()


def load_latent_prior(weights_path: "str | Path", card: PriorCard | None = None,
                      verify_hash: str = "") -> LatentPrior:
    """A ``LatentPrior`` from ``train_latent_prior``'s .safetensors (its card is read from the .json beside it)."""
    from .latent import LatentPrior

    prior = load_prior_file(weights_path, card=card, verify_hash=verify_hash)
    if not isinstance(prior, LatentPrior):
        raise PriorError(f"'{weights_path}' is a pixel-space prior, not a latent one; load it with priors.resolve.")
    return prior
