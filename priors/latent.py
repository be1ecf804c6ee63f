"""Latent diffusion priors: an autoencoder plus an ε-network on its latents (LDM / ReSample style).

``LatentPrior`` is a ``DiffusionPrior`` whose views (``denoise``, ``model_output``, ``tweedie_vp``, ``alphas_cumprod``)
act on latents ``z``; ``encode`` (image on [-1, 1] → z) and ``decode`` (z → image on [-1, 1]) go through the
autoencoder. Latents are scaled as in LDM: ``z = (E(x) − shift)·scale_factor`` so that they have about unit variance.

Our own small prior for 64×64 faces (``faces64-latent``) is built in two trainings, both resumable like
``priors.train``:

1. ``train_autoencoder`` — ``SmallAutoencoder``: convolutional encoder/decoder, ×4 downsampling (64×64×3 → 16×16×c),
   **KL-regularised** with a tiny KL weight (1e-6, as LDM's KL autoencoders). KL rather than VQ because it is the
   simpler one to train well in a short run: no codebook to learn (no dead codes, no commitment loss, no
   straight-through estimator), its decoder is smooth in z (what ReSample's latent optimisation and DAPS need), and
   with so small a KL weight the posterior is nearly deterministic, so encoding with the posterior mean loses
   nothing. It writes ``OUT/NAME.safetensors`` + ``OUT/NAME.json`` with the reconstruction PSNR on held-out images
   and the scale factor (1/std of the training latents, LDM's ``scale_by_std``).
2. ``train_latent_prior`` — encodes the training images once (with their mirror images) and trains an ADM UNet on
   the latents with ``priors.train.fit`` on the LDM "ldm-linear" schedule; it writes one ``OUT/NAME.safetensors``
   holding both networks (keys ``net.*`` and ``autoencoder.*``) and the model card ``OUT/NAME.json`` (latent=True).

``load_prior_file`` / ``priors.resolve`` load such a file (they dispatch here when the card says latent);
``load_latent_prior`` is the direct entry point.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adm import ADMConfig
from .base import DiffusionPrior, PriorCard, PriorError, sha256_file

__all__ = ["AutoencoderConfig", "LatentPrior", "SmallAutoencoder", "latent_prior_from_state", "load_autoencoder",
           "load_latent_prior", "train_autoencoder", "train_latent_prior"]


# ---------------------------------------------------------------------------------------------------------------------
# the prior


class LatentPrior(DiffusionPrior):
    """A ``DiffusionPrior`` on the latents of ``autoencoder``.

    ``autoencoder`` is a module with ``encode(x) → h`` (deterministic: the KL posterior mean, or VQ latents before
    quantisation) and ``decode(h) → x`` (a VQ decoder quantises first), on images in [-1, 1]; the prior's latents are
    ``z = (h − shift_factor)·scale_factor``. ``card.latent`` is set; ``card.extra`` holds ``latent_shape`` [c, h, w]
    at ``card.image_size``, ``downsample``, ``scale_factor`` and ``shift_factor``. ``card.channels`` is the number of
    *image* channels; the latent channels are ``latent_shape[0]``."""

    def __init__(self, net: nn.Module, card: PriorCard, autoencoder: nn.Module, scale_factor: float = 1.0,
                 shift_factor: float = 0.0, betas: Tensor | None = None):
        card.latent = True
        super().__init__(net, card, betas=betas)
        self.autoencoder = autoencoder
        self.scale_factor = float(scale_factor)
        self.shift_factor = float(shift_factor)
        card.extra["scale_factor"] = self.scale_factor
        card.extra["shift_factor"] = self.shift_factor
        card.extra.setdefault("downsample", int(getattr(autoencoder, "downsample", 1)))
        if "latent_shape" not in card.extra and card.image_size:
            f = card.extra["downsample"]
            card.extra["latent_shape"] = [int(autoencoder.latent_channels), card.image_size // f,
                                          card.image_size // f]

    @property
    def downsample(self) -> int:
        """Image pixels per latent pixel along each axis (4 for the f4 autoencoders)."""
        return int(self.card.extra["downsample"])

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.latent_channels)

    def latent_shape(self, image_hw: "tuple[int, int] | None" = None) -> tuple[int, int, int]:
        """(c, h, w) of the latents of an image of size ``image_hw`` (default: the card's native size)."""
        if image_hw is None:
            if "latent_shape" not in self.card.extra:
                raise PriorError(f"prior '{self.card.name}' has no native size; give the image size.")
            return tuple(int(v) for v in self.card.extra["latent_shape"])  # type: ignore[return-value]
        h, w = image_hw
        f = self.downsample
        if h % f or w % f:
            raise PriorError(f"prior '{self.card.name}' needs image sides divisible by {f}, got {h}×{w}; pad the "
                             f"image to the next multiple.")
        return self.latent_channels, h // f, w // f

    def encode(self, x: Tensor) -> Tensor:
        """Image on [-1, 1] → scaled latent z."""
        return (self.autoencoder.encode(x) - self.shift_factor) * self.scale_factor

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent z → image on [-1, 1] (not clamped)."""
        return self.autoencoder.decode(z / self.scale_factor + self.shift_factor)


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


# ---------------------------------------------------------------------------------------------------------------------
# training the autoencoder


def train_autoencoder(data_folder: "str | Path", out: "str | Path", steps: int = 20000, batch_size: int = 32,
                      device: str = "auto", *, name: str = "faces64-ae", size: int = 64, channels: int = 3,
                      crop: str = "resize", config: "AutoencoderConfig | Mapping[str, Any] | None" = None,
                      lr: float = 4e-4, warmup: int = 200, kl_weight: float = 1e-6, recon: str = "l1",
                      held_out: float = 0.05, max_held_out: int = 256, checkpoint_every: int = 250,
                      work_dir: str = "", seed: int = 0, max_images: int = 0, value_map: str = "",
                      log: Callable[[str], None] = print,
                      on_step: Callable[[int, float, float], None] | None = None) -> tuple[Path, Path]:
    """Train (or resume) a ``SmallAutoencoder`` on a folder of images; returns (weights path, card path).

    Loss per image: mean L1 (``recon="l1"``) or L2 (``"l2"``) reconstruction error of a latent sampled from the
    posterior, plus ``kl_weight`` × KL(q(z|x) ‖ N(0, I)) summed over the latent and divided by the number of pixel
    values (LDM's weighting of a summed reconstruction loss). A ``held_out`` fraction of the images (at least 1, at
    most ``max_held_out``, evenly spread over the sorted file names) is never trained on; the card reports the
    reconstruction PSNR on it."""
    from .train import ImageFolder, _atomic_save, _hardware, pick_device

    if recon not in ("l1", "l2"):
        raise PriorError(f"unknown reconstruction loss '{recon}'; use l1 or l2.")
    cfg = config if isinstance(config, AutoencoderConfig) else AutoencoderConfig.from_dict(
        dict(config or {}, in_channels=channels))
    if cfg.in_channels != channels:
        raise PriorError(f"the autoencoder config has {cfg.in_channels} input channels but the images have "
                         f"{channels}; make them agree.")
    if size % cfg.downsample:
        raise PriorError(f"the training size {size} is not divisible by the autoencoder's downsampling "
                         f"{cfg.downsample}; pick another --size.")
    dev = pick_device(device)
    work = Path(work_dir or Path.home() / ".cache" / "restore" / "train" / name)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
        torch.manual_seed(seed)
        model = SmallAutoencoder(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    step, seconds_before = 0, 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)
        if state.get("autoencoder") != cfg.to_dict():
            raise PriorError(f"the checkpoint in {work} is for another architecture; remove it or pick another "
                             f"work dir.")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["rng"])
        step, seconds_before = int(state["step"]), float(state.get("seconds", 0.0))
        log(f"resumed {name} at step {step} from {ckpt_path}")

    data = ImageFolder(str(data_folder), size, channels, crop, max_images, value_map)
    n = len(data)
    n_held = min(max_held_out, max(1, round(held_out * n)), n // 2) if held_out > 0 else 0
    held = [(2 * j + 1) * n // (2 * n_held) for j in range(n_held)]  # evenly spread, distinct
    held_set = set(held)
    train_set = data.subset([i for i in range(n) if i not in held_set]) if n_held else data
    log(f"{len(train_set)} training images, {n_held} held out, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, device {dev}")

    t0, seen = time.perf_counter(), 0
    model.train()
    while step < steps:
        x = train_set.batch(batch_size, g).to(dev, non_blocking=True)
        c, h, w = cfg.latent_channels, x.shape[-2] // cfg.downsample, x.shape[-1] // cfg.downsample
        noise = torch.randn((x.shape[0], c, h, w), generator=g).to(dev)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))
        rec, mean, logvar = model(x, noise)
        err = (rec - x).abs() if recon == "l1" else (rec - x).pow(2)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
        loss = err.mean() + kl_weight * kl.mean() / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += batch_size
        elapsed = time.perf_counter() - t0
        if on_step:
            on_step(step, float(loss.detach()), seen / max(elapsed, 1e-9))
        if step % checkpoint_every == 0 or step == steps:
            _atomic_save(dict(model=model.state_dict(), opt=opt.state_dict(), rng=g.get_state(), step=step,
                              autoencoder=cfg.to_dict(), seconds=seconds_before + elapsed), ckpt_path)
    seconds = seconds_before + (time.perf_counter() - t0)
    model.eval()

    # LDM's scale_by_std: 1/std of the (mean) latents of the training images
    x_train = train_set.fixed(range(min(len(train_set), 512)))
    z = _encode_all(model, x_train, dev)
    scale_factor = float(1.0 / z.flatten().std().clamp_min(1e-8))
    psnr_train = _reconstruct_psnr(model, x_train[:64], dev)
    psnr_held = _reconstruct_psnr(model, data.fixed(held), dev) if n_held else []
    summary = dict(
        held_out_images=n_held, train_images=len(train_set),
        psnr_held_out=round(sum(psnr_held) / len(psnr_held), 3) if psnr_held else None,
        psnr_train=round(sum(psnr_train) / len(psnr_train), 3),
    )
    log(f"autoencoder reconstruction PSNR: held-out {summary['psnr_held_out']} dB, train {summary['psnr_train']} dB; "
        f"scale factor {scale_factor:.4f}")
    extra = dict(steps=step, batch_size=batch_size, lr=lr, kl_weight=kl_weight, recon=recon, crop=crop, size=size,
                 hardware=_hardware(dev), train_seconds=round(seconds, 1), data=Path(data_folder).name)
    return export_autoencoder(model, out, name, scale_factor, dict(summary, **extra))


def export_autoencoder(model: SmallAutoencoder, out: "str | Path", name: str, scale_factor: float,
                       info: Mapping[str, Any]) -> tuple[Path, Path]:
    """``OUT/NAME.safetensors`` (float32 weights) and ``OUT/NAME.json`` (architecture, scale factor, PSNR, …)."""
    from .train import save_safetensors

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
    from .load import read_state_dict

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
    from .load import load_strict

    return load_strict(model, state, source, "export the autoencoder again")


# ---------------------------------------------------------------------------------------------------------------------
# training the latent ε-network


class LatentData:
    """Latents in memory (stored as float16, batches as float32), drawn uniformly; the ``fit`` data source."""

    def __init__(self, latents: Tensor):
        self.z = latents.to(torch.float16).contiguous()

    def __len__(self) -> int:
        return len(self.z)

    def batch(self, n: int, g: torch.Generator) -> Tensor:
        return self.z[torch.randint(0, len(self.z), (n,), generator=g)].float()


def _latents_for_training(ae: SmallAutoencoder, scale: float, data, crop: str, work: Path, ae_sha: str,
                          device: torch.device, seed: int, log: Callable[[str], None]) -> Tensor:
    """The scaled posterior means of every image and its mirror image ("resize"), or of 4 random crops with random
    flips per image ("random"), cached in the work dir for that autoencoder."""
    from safetensors.torch import load_file, save_file

    cache = work / "latents.safetensors"
    key = dict(autoencoder=ae_sha, images=str(len(data)), crop=crop, size=str(data.size), seed=str(seed))
    if cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as f:
            same = (f.metadata() or {}) == key
        if same:
            return load_file(str(cache))["z"]
    log(f"encoding {len(data)} training images into latents")
    chunks, g, chunk = [], torch.Generator().manual_seed(seed + 1), 256
    for start in range(0, len(data), chunk):
        if crop == "resize":
            x = data.fixed(range(start, min(start + chunk, len(data))))
            x = torch.cat([x, x.flip(-1)])
        else:
            x = torch.cat([data.batch(min(chunk, len(data) - start), g) for _ in range(4)])
        chunks.append((_encode_all(ae, x, device) * scale).to(torch.float16))
    z = torch.cat(chunks).contiguous()
    tmp = cache.with_name(cache.name + ".part")
    save_file({"z": z}, str(tmp), metadata=key)
    os.replace(tmp, cache)
    return z


def train_latent_prior(cfg, autoencoder: "str | Path", log: Callable[[str], None] = print,
                       on_step: Callable[[int, float, float], None] | None = None) -> tuple[Path, Path]:
    """Train (or resume) an ADM ε-network on the latents of ``autoencoder`` (a ``train_autoencoder`` output) and
    export the latent prior; returns (weights path, card path).

    ``cfg`` is a ``priors.train.TrainConfig`` for the *images*: ``size``/``channels`` are the image's, ``arch`` the
    UNet's (built for the latent size ``size / downsample`` and the latent channels); the schedule is always
    "ldm-linear". Resuming with a different autoencoder is refused."""
    from .train import ImageFolder, fit, pick_device

    ae, ae_card = load_autoencoder(autoencoder)
    if ae.cfg.in_channels != cfg.channels:
        raise PriorError(f"the autoencoder takes {ae.cfg.in_channels}-channel images but the config says "
                         f"{cfg.channels}; make them agree.")
    if cfg.size % ae.downsample:
        raise PriorError(f"the image size {cfg.size} is not divisible by the autoencoder's downsampling "
                         f"{ae.downsample}; pick another size.")
    device = pick_device(cfg.device)
    work = Path(cfg.work_dir or Path.home() / ".cache" / "restore" / "train" / cfg.name)
    work.mkdir(parents=True, exist_ok=True)
    marker = work / "autoencoder.sha256"
    ae_sha = ae_card["sha256"]
    if marker.is_file() and marker.read_text().strip() != ae_sha and (work / "checkpoint.pt").exists():
        raise PriorError(f"the checkpoint in {work} was trained on the latents of another autoencoder; remove it or "
                         f"pick another work dir.")
    marker.write_text(ae_sha + "\n")

    ae = ae.to(device)
    data = ImageFolder(cfg.data, cfg.size, cfg.channels, cfg.crop, cfg.max_images, cfg.value_map)
    scale = float(ae_card["scale_factor"])
    z = _latents_for_training(ae, scale, data, cfg.crop, work, ae_sha, device, cfg.seed, log)
    lat_cfg = dataclasses.replace(cfg, size=cfg.size // ae.downsample, channels=ae.latent_channels,
                                  schedule="ldm-linear", work_dir=str(work))
    fitted = fit(lat_cfg, LatentData(z), log, on_step)
    return export_latent(cfg, fitted, ae.cpu(), ae_card, len(data), len(z))


def export_latent(cfg, fitted, ae: SmallAutoencoder, ae_card: Mapping[str, Any], n_images: int,
                  n_latents: int) -> tuple[Path, Path]:
    """``OUT/NAME.safetensors`` (``net.*``: the EMA UNet, fp16 if ``cfg.fp16_weights``; ``autoencoder.*``: float32)
    and the model card ``OUT/NAME.json`` (latent=True, with the autoencoder's held-out reconstruction PSNR)."""
    from .train import _hardware, save_safetensors, write_card

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{cfg.name}.safetensors"
    dtype = torch.float16 if cfg.fp16_weights else torch.float32
    tensors = {f"net.{k}": v.detach().to("cpu", dtype).contiguous() for k, v in fitted.ema.state_dict().items()}
    tensors.update({f"autoencoder.{k}": v.detach().to("cpu", torch.float32).contiguous()
                    for k, v in ae.state_dict().items()})
    scale = float(ae_card["scale_factor"])
    save_safetensors(tensors, weights, metadata={"format": "restore-latent", "adm": json.dumps(fitted.adm.to_dict()),
                                                 "autoencoder": json.dumps(ae.cfg.to_dict()),
                                                 "scale_factor": repr(scale)})
    f = ae.downsample
    card = PriorCard(
        name=cfg.name, image_size=cfg.size, channels=cfg.channels, domain=cfg.domain, schedule="ldm-linear",
        timesteps=1000, parameterisation="eps", learned_variance=False, latent=True,
        training_data=cfg.training_data, licence=cfg.licence, sha256=sha256_file(weights),
        architecture={"kind": "latent", "adm": fitted.adm.to_dict(),
                      "autoencoder": {"kind": "restore-kl", **ae.cfg.to_dict()}},
        extra=dict(latent_shape=[ae.latent_channels, cfg.size // f, cfg.size // f], downsample=f, scale_factor=scale,
                   shift_factor=0.0, autoencoder_psnr_held_out=ae_card.get("psnr_held_out"),
                   autoencoder=dict(name=ae_card.get("name"), sha256=ae_card.get("sha256"),
                                    psnr_held_out=ae_card.get("psnr_held_out"),
                                    held_out_images=ae_card.get("held_out_images"),
                                    psnr_train=ae_card.get("psnr_train"), steps=ae_card.get("steps"),
                                    kl_weight=ae_card.get("kl_weight")),
                   steps=fitted.step, batch_size=cfg.batch_size, lr=cfg.lr, ema=cfg.ema, crop=cfg.crop,
                   images=n_images, latents=n_latents, weights_dtype=str(dtype).replace("torch.", ""),
                   hardware=_hardware(fitted.device), train_seconds=round(fitted.seconds, 1),
                   parameters=sum(v.numel() for v in tensors.values())),
    )
    return weights, write_card(card, out / f"{cfg.name}.json")


# ---------------------------------------------------------------------------------------------------------------------
# loading


def latent_prior_from_state(tensors: Mapping[str, Tensor], metadata: Mapping[str, str], card: PriorCard | None,
                            source: str, config: ADMConfig | None = None) -> LatentPrior:
    """A ``LatentPrior`` from the tensors of a ``train_latent_prior`` file (what ``load_prior_file`` dispatches to)."""
    from .load import load_adm

    net_state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    ae_state = {k[12:]: v for k, v in tensors.items() if k.startswith("autoencoder.")}
    if not net_state or not ae_state:
        raise PriorError(f"'{source}' is marked as a latent prior but does not hold both networks (net.* and "
                         f"autoencoder.* keys); export it with priors.latent.train_latent_prior.")
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
    from .load import load_prior_file

    prior = load_prior_file(weights_path, card=card, verify_hash=verify_hash)
    if not isinstance(prior, LatentPrior):
        raise PriorError(f"'{weights_path}' is a pixel-space prior, not a latent one; load it with priors.resolve.")
    return prior
