"""Training latent priors (``restore prior train --latent``): the autoencoder (``train_autoencoder``), then the ADM
UNet on its latents (``train_latent_prior``, with ``priors.train.fit``), each resumable like ``priors.train``.
See ``priors.latent`` for what the two trainings make and how the result is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .autoencoder import (AutoencoderConfig, SmallAutoencoder, _encode_all, _reconstruct_psnr, export_autoencoder,
                          load_autoencoder)
from .base import PriorCard, PriorError, sha256_file

__all__ = ["train_autoencoder", "train_latent_prior"]


# ---------------------------------------------------------------------------------------------------------------------
# training the autoencoder


def train_autoencoder(data_folder: "str | Path", out: "str | Path", steps: int = 20000, batch_size: int = 32,
                      device: str = "auto", *, name: str = "faces64-ae", size: int = 64, channels: int = 3,
                      crop: str = "resize", config: "AutoencoderConfig | Mapping[str, Any] | None" = None,
                      lr: float = 4e-4, warmup: int = 200, kl_weight: float = 1e-6, recon: str = "l1",
                      held_out: float = 0.05, max_held_out: int = 256, checkpoint_every: int = 250,
                      work_dir: str = "", seed: int = 0, max_images: int = 0, value_map: str = "",
                      lr_schedule: str = "constant", schedule_steps: int = 0,
                      log: Callable[[str], None] = print,
                      on_step: Callable[[int, float, float], None] | None = None) -> tuple[Path, Path]:
    """Train (or resume) a ``SmallAutoencoder`` on a folder of images; returns (weights path, card path).

    Loss per image: mean L1 (``recon="l1"``) or L2 (``"l2"``) reconstruction error of a latent sampled from the
    posterior, plus ``kl_weight`` × KL(q(z|x) ‖ N(0, I)) summed over the latent and divided by the number of pixel
    values (LDM's weighting of a summed reconstruction loss). The learning rate warms up linearly over ``warmup``
    steps, then stays (``lr_schedule="constant"``) or follows a cosine to 0 at ``schedule_steps`` (default ``steps``;
    larger when the run is trained in chunks, so stopping at ``steps`` does not change the schedule). A ``held_out``
    fraction of the images (at least 1, at most ``max_held_out``, evenly spread over the sorted file names) is never
    trained on; the card reports the reconstruction PSNR on it."""
    from .train import ImageFolder, _atomic_save, _hardware, pick_device, scheduled_rate

    if recon not in ("l1", "l2"):
        raise PriorError(f"unknown reconstruction loss '{recon}'; use l1 or l2.")
    if lr_schedule not in ("constant", "cosine"):
        raise PriorError(f"unknown learning-rate schedule '{lr_schedule}'; use constant or cosine.")
    total = schedule_steps or steps
    schedule = [lr_schedule, total if lr_schedule == "cosine" else 0]  # recorded in the checkpoint
    if total < steps:
        raise PriorError(f"the learning-rate schedule ends at step {total}, before the {steps} steps asked for; give "
                         f"schedule_steps ≥ steps.")
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
        was = list(state.get("lr_schedule", ["constant", 0]))
        if was != schedule:
            raise PriorError(f"the checkpoint in {work} was trained with the learning-rate schedule {was[0]} "
                             f"(ending at step {was[1]}), not {lr_schedule}" + (f" ending at {total}" if
                             lr_schedule == "cosine" else "") + "; resume with the same or pick another work dir.")
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
        rate = scheduled_rate(lr, warmup, lr_schedule, total, step)
        for group in opt.param_groups:
            group["lr"] = rate
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
                              autoencoder=cfg.to_dict(), seconds=seconds_before + elapsed,
                              lr_schedule=schedule), ckpt_path)
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
    extra = dict(steps=step, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, kl_weight=kl_weight, recon=recon,
                 crop=crop, size=size, hardware=_hardware(dev), train_seconds=round(seconds, 1),
                 data=Path(data_folder).name)
    return export_autoencoder(model, out, name, scale_factor, dict(summary, **extra))


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
    from .train import hardware_summary, write_card
    from .weights import save_safetensors

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
                                    kl_weight=ae_card.get("kl_weight"), batch_size=ae_card.get("batch_size"),
                                    lr=ae_card.get("lr"), lr_schedule=ae_card.get("lr_schedule", "constant"),
                                    hardware=ae_card.get("hardware"), train_seconds=ae_card.get("train_seconds")),
                   steps=fitted.step, batch_size=cfg.batch_size, lr=cfg.lr, ema=cfg.ema, crop=cfg.crop,
                   images=n_images, latents=n_latents, weights_dtype=str(dtype).replace("torch.", ""),
                   hardware=hardware_summary(fitted.runs, fitted.device), hardware_runs=fitted.runs,
                   train_seconds=round(fitted.seconds, 1),
                   parameters=sum(v.numel() for v in tensors.values())),
    )
    return weights, write_card(card, out / f"{cfg.name}.json")
