"""Our small KL autoencoder for latent priors: ``SmallAutoencoder`` (convolutional encoder/decoder, ×4 down-
sampling, KL-regularised with a tiny weight as LDM's), its configuration, and its file format (``export_autoencoder``
/ ``load_autoencoder``: safetensors + a JSON card, loaded strictly). Training is in ``priors.latent_train``; the
prior that uses it is ``priors.latent.LatentPrior``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import PriorError, sha256_file
from .weights import load_strict, read_state_dict, save_safetensors

__all__ = ["AutoencoderConfig", "SmallAutoencoder", "export_autoencoder", "load_autoencoder"]


# ---------------------------------------------------------------------------------------------------------------------
# our small KL autoencoder


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """``SmallAutoencoder``'s architecture. ``channel_mult`` has one entry per level; each level but the last halves
    the resolution, so "1,2,2" downsamples ×4."""

    in_channels: int = 3
    latent_channels: int = 4
    base_channels: int = 64
    channel_mult: str = "1,2,2"
    num_res_blocks: int = 2

    @property
    def mults(self) -> tuple[int, ...]:
        return tuple(int(v) for v in str(self.channel_mult).split(",") if v.strip())

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.mults) - 1)

    def __post_init__(self) -> None:
        mult = self.channel_mult
        if isinstance(mult, (list, tuple)):
            object.__setattr__(self, "channel_mult", ",".join(str(int(m)) for m in mult))
        for name in ("in_channels", "latent_channels", "base_channels", "num_res_blocks"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if not self.mults or min(self.mults) < 1 or min(self.in_channels, self.latent_channels, self.base_channels,
                                                         self.num_res_blocks) < 1:
            raise ValueError(f"invalid autoencoder config {self}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AutoencoderConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _norm(ch: int) -> nn.GroupNorm:
    groups = 32 if ch % 32 == 0 else 8 if ch % 8 == 0 else 1
    return nn.GroupNorm(groups, ch, eps=1e-6)


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class SmallAutoencoder(nn.Module):
    """A KL-regularised convolutional autoencoder (LDM's design without attention, GAN or perceptual loss).

    ``encode_dist(x)`` → (mean, logvar) of the diagonal Gaussian posterior, ``encode(x)`` → its mean,
    ``decode(z)`` → image; images on [-1, 1], any size divisible by ``downsample``."""

    def __init__(self, cfg: "AutoencoderConfig | Mapping[str, Any] | None" = None):
        super().__init__()
        cfg = cfg if isinstance(cfg, AutoencoderConfig) else AutoencoderConfig.from_dict(cfg or {})
        self.cfg = cfg
        widths = [cfg.base_channels * m for m in cfg.mults]
        # encoder
        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)]
        ch = widths[0]
        for level, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                enc.append(_Res(ch, w))
                ch = w
            if level != len(widths) - 1:
                enc.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        enc += [_Res(ch, ch), _norm(ch), nn.SiLU(), nn.Conv2d(ch, 2 * cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        # decoder (mirror image)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch, 3, padding=1), _Res(ch, ch)]
        for level in reversed(range(len(widths))):
            for _ in range(cfg.num_res_blocks):
                dec.append(_Res(ch, widths[level]))
                ch = widths[level]
            if level:
                dec.append(_Up(ch))
        dec += [_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def downsample(self) -> int:
        return self.cfg.downsample

    @property
    def latent_channels(self) -> int:
        return self.cfg.latent_channels

    def encode_dist(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.downsample
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"SmallAutoencoder needs H and W divisible by {f}, got {tuple(x.shape[-2:])}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_dist(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction, mean, logvar); with ``noise`` the latent is sampled as mean + σ·noise."""
        mean, logvar = self.encode_dist(x)
        z = mean if noise is None else mean + (0.5 * logvar).exp() * noise
        return self.decode(z), mean, logvar


def _psnr01(estimate: Tensor, reference: Tensor) -> Tensor:
    """Per-image PSNR (dB) of images on [-1, 1], compared on [0, 1] after clamping (data range 1)."""
    a, b = ((estimate.clamp(-1, 1) + 1) / 2).double(), ((reference.clamp(-1, 1) + 1) / 2).double()
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)


@torch.no_grad()
def _encode_all(ae: nn.Module, x: Tensor, device: torch.device, batch: int = 64) -> Tensor:
    return torch.cat([ae.encode(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


@torch.no_grad()
def _reconstruct_psnr(ae: SmallAutoencoder, x: Tensor, device: torch.device, batch: int = 64) -> list[float]:
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device)
        out += _psnr01(ae.decode(ae.encode(xb)).float(), xb.float()).tolist()
    return out


def export_autoencoder(model: SmallAutoencoder, out: "str | Path", name: str, scale_factor: float,
                       info: Mapping[str, Any]) -> tuple[Path, Path]:
    """``OUT/NAME.safetensors`` (float32 weights) and ``OUT/NAME.json`` (architecture, scale factor, PSNR, …)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_safetensors(tensors, weights, metadata={"format": "restore-autoencoder",
                                                 "autoencoder": json.dumps(model.cfg.to_dict()),
                                                 "scale_factor": repr(float(scale_factor))})
    card = dict(name=name, kind="autoencoder", architecture={"kind": "restore-kl", **model.cfg.to_dict()},
                downsample=model.downsample, latent_channels=model.latent_channels, scale_factor=float(scale_factor),
                sha256=sha256_file(weights), parameters=sum(v.numel() for v in tensors.values()), **info)
    card_path = out / f"{name}.json"
    tmp = card_path.with_name(card_path.name + ".part")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    return weights, card_path


def load_autoencoder(path: "str | Path") -> tuple[SmallAutoencoder, dict]:
    """A ``SmallAutoencoder`` (eval mode) and its card from ``train_autoencoder``'s .safetensors (+ .json)."""

    path = Path(path)
    tensors, metadata = read_state_dict(path)
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    arch = card.get("architecture") or (json.loads(metadata["autoencoder"]) if "autoencoder" in metadata else None)
    if arch is None:
        raise PriorError(f"'{path}' is not an autoencoder written by train_autoencoder (no architecture in its "
                         f"metadata or card); give the .safetensors it wrote.")
    model = _strict_autoencoder(tensors, arch, str(path))
    if "scale_factor" not in card:
        card["scale_factor"] = float(metadata.get("scale_factor", 1.0))
    card.setdefault("name", path.stem)
    card.setdefault("sha256", sha256_file(path))
    return model, card


def _strict_autoencoder(state: Mapping[str, Tensor], arch: Mapping[str, Any], source: str) -> SmallAutoencoder:
    try:
        model = SmallAutoencoder(AutoencoderConfig.from_dict(arch))
    except (TypeError, ValueError) as exc:
        raise PriorError(f"'{source}' has an invalid autoencoder architecture ({exc}).") from None

    return load_strict(model, state, source, "export the autoencoder again")
