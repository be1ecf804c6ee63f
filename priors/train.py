"""Training our own pixel priors (``restore prior train``): an ADM UNet on a discrete VP schedule, trained either
with DDPM's ε-prediction loss (``precond="ddpm"``, uniform timesteps) or with EDM's preconditioning, log-normal noise
levels and loss weighting (``precond="edm"``, ``priors.precond``); either way the result is an ε-network for the solvers.

Data: a folder of images, read once into memory (uint8/uint16), then random crops or resizes and horizontal flips
per batch. Optimisation: AdamW with linear warm-up, gradient clipping, an EMA of the weights (the EMA is what ships).
Checkpoints (model, EMA, optimiser, step, RNG state) are written atomically every ``checkpoint_every`` steps to
``work_dir`` and a run resumes from the latest one, so a long training runs as a series of short chunks.
The result is ``OUT/NAME.safetensors`` (EMA weights, fp16 by default) and ``OUT/NAME.json`` (the model card).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .adm import ADMConfig, ADMUNet
from .configs import ARCHITECTURES  # noqa: F401  (re-exported: restore prior train --arch)
from .base import SCHEDULES, PriorCard, PriorError, sha256_file
from .precond import SIGMA_DATA, EDMPrecond
from .weights import save_safetensors  # noqa: F401  (re-exported)

@dataclasses.dataclass
class TrainConfig:
    data: str                            # folder of training images
    name: str                            # prior name (file stem)
    out: str                             # where the final .safetensors and .json go
    size: int = 64                       # training resolution
    channels: int = 3                    # 3 = RGB, 1 = grey
    arch: str = "small64"                # key of ARCHITECTURES (or a JSON dict of ADM arguments)
    crop: str = "resize"                 # resize | random (random crops of `size`, for photographs)
    steps: int = 10000
    batch_size: int = 32
    lr: float = 2e-4
    warmup: int = 200
    ema: float | str = 0.999               # a decay, or rel:S (ema_decay)
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    seed: int = 0
    work_dir: str = ""                   # checkpoints; default ~/.cache/restore/train/NAME
    device: str = "auto"
    fp16_weights: bool = True
    max_images: int = 0                  # 0 = all
    domain: str = ""
    training_data: str = ""
    licence: str = ""
    value_map: str = ""                  # optional "hu:LO,HI" for 16-bit CT stored as HU+1024
    load_size: int = 0                   # resize every image to load_size × load_size when loading (0 = keep)
    schedule: str = "linear"             # key of priors.base.SCHEDULES (latent priors: "ldm-linear")
    lr_schedule: str = "constant"        # constant | cosine (to 0 at `steps`, after the warm-up)
    init: str = ""                       # start from this prior's weights (name or file): fine-tuning
    precond: str = "ddpm"                # ddpm (ε-prediction, uniform t) | edm (Karras et al. 2022; priors.precond)

    def adm_config(self) -> ADMConfig:
        args = ARCHITECTURES[self.arch] if self.arch in ARCHITECTURES else json.loads(self.arch)
        return ADMConfig.from_dict(dict(args, image_size=self.size, in_channels=self.channels, learn_sigma=False))


class ImageFolder:
    """All images of a folder in memory; ``batch`` gives random crops/resizes with flips on [-1, 1]."""

    SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}

    def __init__(self, folder: str, size: int, channels: int, crop: str, max_images: int = 0, value_map: str = "",
                 progress: Callable[[int, int], None] | None = None, load_size: int = 0):
        from PIL import Image

        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in self.SUFFIXES)
        if not files:
            raise PriorError(f"no training images (PNG/JPEG/TIFF) under '{folder}'; check the path.")
        if max_images:
            files = files[:max_images]
        self.size, self.channels, self.crop, self.value_map = size, channels, crop, value_map
        self.images: list[np.ndarray] = []
        for i, f in enumerate(files):
            with Image.open(f) as im:
                if im.mode in ("I;16", "I;16B", "I"):
                    arr = np.asarray(im).astype(np.uint16)[..., None]
                else:
                    arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
                    arr = arr[..., None] if arr.ndim == 2 else arr
            if arr.shape[-1] != channels:
                arr = np.repeat(arr[..., :1], channels, axis=-1) if channels == 3 else arr.mean(-1, keepdims=True)
            if load_size and arr.shape[:2] != (load_size, load_size):
                arr = _resize(arr, load_size)
            if crop == "resize" and arr.shape[:2] != (size, size):
                arr = _resize(arr, size)
            if min(arr.shape[:2]) < size:
                raise PriorError(f"'{f}' is {arr.shape[0]}×{arr.shape[1]}, smaller than the training size {size}.")
            self.images.append(np.ascontiguousarray(arr))
            if progress and (i % 500 == 0 or i == len(files) - 1):
                progress(i + 1, len(files))
        self.same_size = len({a.shape for a in self.images}) == 1
        if self.same_size and crop == "resize":
            self._stack = torch.from_numpy(np.stack(self.images))  # N, H, W, C

    def __len__(self) -> int:
        return len(self.images)

    def _to_unit(self, t: torch.Tensor) -> torch.Tensor:
        """Stored integers → [0, 1] (CT: HU window)."""
        if self.value_map.startswith("hu:"):
            lo, hi = (float(v) for v in self.value_map[3:].split(","))
            return ((t.float() - 1024.0 - lo) / (hi - lo)).clamp(0, 1)
        scale = 65535.0 if t.dtype in (torch.int32, torch.int64) or t.dtype == torch.uint16 else 255.0
        return t.float() / scale

    def _crop01(self, i: int, top: int, left: int) -> torch.Tensor:
        """Image i's size × size crop at (top, left) on [0, 1], (H, W, C); 8-bit stays 8-bit (÷255)."""
        a = self.images[i][top:top + self.size, left:left + self.size]
        a = a.astype(np.int32) if a.dtype == np.uint16 else np.array(a)  # a writable copy
        return self._to_unit(torch.from_numpy(a))

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(self.images), (n,), generator=g)
        if hasattr(self, "_stack"):
            raw = self._stack[idx]
            x = self._to_unit(raw.to(torch.int32) if raw.dtype == torch.uint16 else raw).permute(0, 3, 1, 2)
        else:
            crops = []
            for i in idx.tolist():
                a = self.images[i]
                top = int(torch.randint(0, a.shape[0] - self.size + 1, (1,), generator=g))
                left = int(torch.randint(0, a.shape[1] - self.size + 1, (1,), generator=g))
                crops.append(self._crop01(i, top, left))
            x = torch.stack(crops).permute(0, 3, 1, 2)
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x * 2 - 1

    def subset(self, indices: "list[int] | range") -> "ImageFolder":
        """The same folder restricted to the images at ``indices`` (e.g. a training / held-out split)."""
        sub = copy.copy(self)
        sub.images = [self.images[i] for i in indices]
        if hasattr(self, "_stack"):
            sub._stack = self._stack[list(indices)]
        return sub

    def fixed(self, indices: "list[int] | range | None" = None) -> torch.Tensor:
        """The images at ``indices`` (all by default): centre crops of ``size``, not flipped, on [-1, 1]."""
        crops = []
        for i in range(len(self.images)) if indices is None else indices:
            h, w = self.images[i].shape[:2]
            crops.append(self._crop01(i, (h - self.size) // 2, (w - self.size) // 2))
        return torch.stack(crops).permute(0, 3, 1, 2) * 2 - 1


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if arr.dtype == np.uint16:
        t = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        return t[0].permute(1, 2, 0).round().clamp(0, 65535).numpy().astype(np.uint16)
    mode = "RGB" if arr.shape[-1] == 3 else "L"
    im = Image.fromarray(arr if mode == "RGB" else arr[..., 0], mode)
    out = np.asarray(im.resize((size, size), Image.BICUBIC))
    return out[..., None] if out.ndim == 2 else out


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class TrainingData(Protocol):
    """What ``fit`` trains on: ``batch(n, g)`` → (n, C, H, W) samples of x₀ (images on [-1, 1], or latents)."""

    def __len__(self) -> int: ...

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor: ...


@dataclasses.dataclass
class FitResult:
    ema: torch.nn.Module         # the EMA network (what ships: its ADM UNet, ``core(ema)``)
    adm: ADMConfig
    step: int
    seconds: float               # training time over all resumed chunks
    device: torch.device
    init_info: dict = dataclasses.field(default_factory=dict)  # what --init started from, if anything
    runs: list = dataclasses.field(default_factory=list)  # each resumed chunk: steps first..last, hardware, seconds


def train(cfg: TrainConfig, log: Callable[[str], None] = print,
          on_step: Callable[[int, float, float], None] | None = None) -> tuple[Path, Path]:
    """Train (or resume) and write the final weights and model card. Returns (weights path, card path)."""
    data = ImageFolder(cfg.data, cfg.size, cfg.channels, cfg.crop, cfg.max_images, cfg.value_map,
                       progress=lambda i, n: log(f"loading images {i}/{n}") if i == n else None, load_size=cfg.load_size)
    for warning in training_warnings(len(data), cfg.steps, cfg.batch_size, fine_tune=bool(cfg.init)):
        log(f"warning: {warning}")
    fitted = fit(cfg, data, log, on_step)
    shapes = {a.shape[:2] for a in data.images}
    (h, w), = shapes if len(shapes) == 1 else [(0, 1)]
    native = h if h == w else None  # all images one square size
    return export(cfg, fitted.ema, fitted.adm, fitted.step, fitted.seconds, fitted.device, len(data),
                  native_size=native, init_info=fitted.init_info, runs=fitted.runs)


#: below these a prior learns little: the embedded ones saw 80–22,407 images for 1,400–8,000 steps of batch 16
FEW_IMAGES, FEW_IMAGES_SEEN = 50, 20_000


def training_warnings(images: int, steps: int, batch_size: int, fine_tune: bool = False) -> list[str]:
    """What a user should hear before a training that cannot give a useful prior (a fine-tune, ``--init``, starts
    from a trained one: a short run is not a warning there)."""
    out = []
    if images < FEW_IMAGES:
        out.append(f"{images} training images is very few (a prior memorises them, or learns noise); use at least "
                   f"{FEW_IMAGES}, better thousands.")
    if steps * batch_size < FEW_IMAGES_SEEN and not fine_tune:
        out.append(f"{steps} steps of batch {batch_size} ({steps * batch_size:,} images seen) is far too short to "
                   f"learn a prior (the embedded ones saw 22,000–128,000); samples will look like noise.")
    return out


LR_SCHEDULES = ("constant", "cosine")


def scheduled_rate(lr: float, warmup: int, schedule: str, total: int, step: int) -> float:
    """The learning rate of optimisation step ``step`` (0-based): linear warm-up over ``warmup`` steps, then
    constant or a cosine decay that reaches 0 at step ``total``."""
    lr = lr * min(1.0, (step + 1) / max(1, warmup))
    if schedule == "cosine":
        lr *= 0.5 * (1 + np.cos(np.pi * min(step, total) / max(1, total)))
    return float(lr)


def power_ema_gamma(sigma_rel: float) -> float:
    """The exponent γ of a power-function EMA (Karras et al. 2024, "Analyzing and improving the training dynamics of
    diffusion models", sec. 3.1) whose averaging profile p(x) ∝ x^γ over the run so far, x = step/steps ∈ (0, 1], has
    relative standard deviation ``sigma_rel``: the root of σ_rel² = (γ+1) / ((γ+2)²(γ+3))."""
    if not 0 < sigma_rel < 0.28:
        raise PriorError(f"a relative EMA length must lie in (0, 0.28) (γ > 0); got {sigma_rel:g}.")
    t = sigma_rel ** -2  # (γ+2)²(γ+3) - t(γ+1) = γ³ + 7γ² + (16 - t)γ + (12 - t) = 0
    return float(max(r.real for r in np.roots([1, 7, 16 - t, 12 - t]) if abs(r.imag) < 1e-9))


def ema_decay(spec: float | str, step: int) -> float:
    """The EMA decay of update ``step`` (0 for the first). ``spec`` a number d: today's rule min(d, (1+step)/(10+step)),
    a fixed decay once the warm-up term passes d (step ≥ 9,000 for 0.999) and before that an average over the
    run so far, close to a power-function EMA of σ_rel ≈ 0.09. ``spec`` "rel:S": the power-function EMA of relative
    length S, β = (1 - 1/t)^(γ+1) at the t-th update (γ from ``power_ema_gamma``), whose average always spans the same
    fraction of the run however long it is."""
    if isinstance(spec, str) and spec.startswith("rel:"):
        gamma = power_ema_gamma(float(spec[4:]))
        return (1 - 1 / (step + 1)) ** (gamma + 1)
    return min(float(spec), (1 + step) / (10 + step))


def parse_ema(text: str) -> float | str:
    """``--ema``: a decay in [0, 1) (``ema_decay``'s today's rule) or ``rel:S``, a power-function EMA of relative
    length S; anything else is refused with the two forms."""
    text = str(text).strip()
    try:
        if text.startswith("rel:"):
            spec = f"rel:{float(text[4:]):g}"
            ema_decay(spec, 0)
            return spec
        decay = float(text)
    except ValueError:
        decay = -1.0
    if not 0 <= decay < 1:
        raise PriorError(f"--ema takes a decay in [0, 1) such as 0.999, or a relative length in (0, 0.28) such as "
                         f"rel:0.1; got '{text}'.")
    return decay


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """``scheduled_rate`` of a prior's training: the cosine reaches 0 at ``cfg.steps``."""
    return scheduled_rate(cfg.lr, cfg.warmup, cfg.lr_schedule, cfg.steps, step)


def initial_weights(cfg: TrainConfig, adm: ADMConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict of the prior named by ``cfg.init`` (a name ``restore list priors`` shows, or a file), checked to
    have ``adm``'s architecture, and what its card says about its own training."""
    from .adm import ADMUNet as _ADM
    from .registry import resolve

    prior = resolve(cfg.init)
    net = getattr(prior, "net", None)
    if prior.card.parameterisation != _PARAMETERISATION[cfg.precond]:
        raise PriorError(f"--init '{cfg.init}' was trained with parameterisation '{prior.card.parameterisation}'; "
                         f"fine-tune it with --precond {_PRECOND_OF[prior.card.parameterisation]}, or train from "
                         f"scratch.")
    net = getattr(net, "net", net) if cfg.precond == "edm" else net
    if not isinstance(net, _ADM) or prior.card.latent:
        raise PriorError(f"--init '{cfg.init}' is not a pixel-space ADM prior; fine-tuning starts from one such as "
                         f"faces64.")
    theirs, ours = dict(net.cfg.to_dict(), image_size=adm.image_size), adm.to_dict()
    if theirs != ours:
        diff = sorted(k for k in ours if theirs.get(k) != ours[k])
        raise PriorError(f"--init '{cfg.init}' has another architecture than --arch {cfg.arch} (differs in "
                         f"{', '.join(diff)}); pass the --arch and --channels it was trained with.")
    state = {k: v.detach().float().cpu() for k, v in net.state_dict().items()}
    extra = prior.card.extra or {}
    return state, dict(init=cfg.init, init_steps=extra.get("steps"), init_batch_size=extra.get("batch_size"),
                       **training_before(extra))


def training_before(extra: dict) -> dict:
    """All the training behind a prior whose card extra is ``extra``, its own and that of every prior it was
    fine-tuned from: images (crops) seen, pixels seen (crops of different sizes differ) and seconds."""
    own = int(extra.get("steps") or 0) * int(extra.get("batch_size") or 0)
    side = int(extra.get("train_size") or 0)
    before_images, before_pixels = extra.get("init_images_seen"), extra.get("init_pixels_seen")
    if before_images is None:  # a card from before these fields: its parent's own run, at this run's crop size
        before_images = int(extra.get("init_steps") or 0) * int(extra.get("init_batch_size") or 0)
        before_pixels = before_images * side * side
    return dict(init_images_seen=own + int(before_images),
                init_pixels_seen=own * side * side + int(before_pixels or 0),
                init_train_seconds=float(extra.get("train_seconds") or 0.0)
                + float(extra.get("init_train_seconds") or 0.0))


#: the model card's parameterisation for each --precond, and back
_PARAMETERISATION = {"ddpm": "eps", "edm": "edm"}
_PRECOND_OF = {v: k for k, v in _PARAMETERISATION.items()}


def make_network(adm: ADMConfig, precond: str, schedule: str) -> torch.nn.Module:
    """The trainable network: the ADM UNet itself (ddpm: it predicts ε), or wrapped in EDM's preconditioning
    (edm: its forward still gives ε̂ on the schedule)."""
    net = ADMUNet(adm)
    if precond == "edm":
        return EDMPrecond(net, torch.cumprod(1 - SCHEDULES[schedule](1000), 0))
    return net


def core(model: torch.nn.Module) -> ADMUNet:
    """The ADM UNet inside a (possibly preconditioned) network: what checkpoints and weight files hold."""
    return model if isinstance(model, ADMUNet) else model.net


def fit(cfg: TrainConfig, data: TrainingData, log: Callable[[str], None] = print,
        on_step: Callable[[int, float, float], None] | None = None, stop_at: int | None = None,
        extra_emas: Sequence[str] = ()) -> FitResult:
    """The training loop on ``data`` with the ``cfg.schedule`` VP schedule (``cfg.precond``: DDPM's ε loss or EDM's):
    resumes from and writes checkpoints in the work dir; returns the EMA model. ``stop_at`` ends this chunk early
    (a checkpoint is written there) without changing the run's learning-rate schedule, which is set by ``cfg.steps``.
    ``extra_emas``: more EMA profiles (``ema_decay`` specs) kept beside the shipped one, in the checkpoint's
    ``ema_extra`` (for comparing EMA lengths in one run: ``benchmarks/train_recipes.py``).
    ``train`` runs it on an image folder, ``priors.latent_train`` on the latents of an autoencoder."""
    if cfg.schedule not in SCHEDULES:
        raise PriorError(f"unknown schedule '{cfg.schedule}'; use one of {', '.join(SCHEDULES)}.")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise PriorError(f"unknown learning-rate schedule '{cfg.lr_schedule}'; use one of {', '.join(LR_SCHEDULES)}.")
    if cfg.precond not in _PARAMETERISATION:
        raise PriorError(f"unknown preconditioning '{cfg.precond}'; use one of {', '.join(_PARAMETERISATION)}.")
    device = pick_device(cfg.device)
    work = Path(cfg.work_dir or Path.home() / ".cache" / "restore" / "train" / cfg.name)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    adm = cfg.adm_config()
    torch.manual_seed(cfg.seed)  # the initial weights come from the run's seed too
    model = make_network(adm, cfg.precond, cfg.schedule).to(device)
    ema = make_network(adm, cfg.precond, cfg.schedule).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    for spec in extra_emas:
        ema_decay(spec, 0)  # a bad spec fails here, before any training
    shadows = {spec: [p.detach().clone() for p in model.parameters()] for spec in extra_emas}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    step, seconds_before, init_info, runs = 0, 0.0, {}, []
    if cfg.init and not ckpt_path.exists():
        state, init_info = initial_weights(cfg, adm)
        core(model).load_state_dict(state)
        core(ema).load_state_dict(state)
        log(f"starting from the weights of {cfg.init}")
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["adm"] != adm.to_dict() or state.get("precond", "ddpm") != cfg.precond:
            raise PriorError(f"the checkpoint in {work} is for another architecture or preconditioning; remove it or "
                             f"pick another --work-dir.")
        core(model).load_state_dict(state["model"])
        core(ema).load_state_dict(state["ema"])
        if set(shadows) - set(state.get("ema_extra", {})):
            raise PriorError(f"the checkpoint in {work} lacks the EMA profiles {sorted(set(shadows))}; they must be "
                             f"kept from the first step: remove it or pick another --work-dir.")
        for spec in shadows:
            shadows[spec] = [v.to(device) for v in state["ema_extra"][spec]]
        opt.load_state_dict(state["opt"])
        g.set_state(state["rng"])
        step, seconds_before = int(state["step"]), float(state.get("seconds", 0.0))
        init_info = state.get("init_info", {})
        # a checkpoint from before the per-chunk records: its steps' hardware is not known
        runs = state.get("runs") or ([dict(first=1, last=step, hardware=None, seconds=round(seconds_before, 1))]
                                     if step else [])
        log(f"resumed {cfg.name} at step {step} from {ckpt_path}")
    log(f"{len(data)} images, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, device {device}")

    betas = SCHEDULES[cfg.schedule](1000)
    ab = torch.cumprod(1 - betas, 0).float().to(device)
    use_amp = device.type == "cuda"
    t0 = time.perf_counter()
    seen, first, hardware = 0, step + 1, _hardware(device)

    def runs_so_far() -> list[dict]:
        return runs + ([dict(first=first, last=step, hardware=hardware,
                             seconds=round(time.perf_counter() - t0, 1))] if step >= first else [])
    model.train()
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    while step < end:
        x0 = data.batch(cfg.batch_size, g).to(device, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            if cfg.precond == "edm":
                loss = model.loss(x0, g)
            else:
                t = torch.randint(0, 1000, (cfg.batch_size,), generator=g).to(device)
                eps = torch.randn(x0.shape, generator=g).to(device)
                a = ab[t].reshape(-1, 1, 1, 1)
                x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
                loss = F.mse_loss(model(x_t, t.float()).float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            decay = ema_decay(cfg.ema, step)
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
            for spec, shadow in shadows.items():
                decay = ema_decay(spec, step)
                for pe, pm in zip(shadow, model.parameters()):
                    pe.lerp_(pm, 1 - decay)
        step += 1
        seen += cfg.batch_size
        elapsed = time.perf_counter() - t0
        if on_step:
            on_step(step, float(loss.detach()), seen / max(elapsed, 1e-9))
        if step % cfg.checkpoint_every == 0 or step == end:
            _atomic_save(dict(model=core(model).state_dict(), ema=core(ema).state_dict(), opt=opt.state_dict(),
                              rng=g.get_state(), step=step, adm=adm.to_dict(), seconds=seconds_before + elapsed,
                              init_info=init_info, precond=cfg.precond, runs=runs_so_far(),
                              **({"ema_extra": shadows} if shadows else {})), ckpt_path)
    total_seconds = seconds_before + (time.perf_counter() - t0)
    return FitResult(ema=ema, adm=adm, step=step, seconds=total_seconds, device=device, init_info=init_info,
                     runs=runs_so_far())


def export(cfg: TrainConfig, ema: torch.nn.Module, adm: ADMConfig, step: int, seconds: float, device: torch.device,
           n_images: int, native_size: int | None = None, init_info: dict | None = None,
           runs: list[dict] | None = None) -> tuple[Path, Path]:
    """Write the EMA weights (fp16 unless told otherwise) and the model card. ``native_size``: the side of the
    (square, same-size) images the crops were cut from, the scale a convolutional crop-trained prior is meant for.
    ``runs``: the chunks the training was resumed in (``FitResult.runs``); the card's ``hardware`` names each."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{cfg.name}.safetensors"
    dtype = torch.float16 if cfg.fp16_weights else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in core(ema).state_dict().items()}
    save_safetensors(tensors, weights, metadata={"format": "restore-adm", "adm": json.dumps(adm.to_dict())})
    # a fully convolutional network trained on random crops restores images of any size its downsampling divides;
    # its native size (the scale of the anatomy / the unconditional samples) is that of the images it was cut from
    any_size = cfg.crop == "random" and not adm.attention_resolutions.strip()
    card = PriorCard(
        name=cfg.name, image_size=(native_size or cfg.size) if any_size else cfg.size, channels=cfg.channels,
        domain=cfg.domain, schedule=cfg.schedule,
        timesteps=1000, parameterisation=_PARAMETERISATION[cfg.precond], learned_variance=False,
        training_data=cfg.training_data,
        licence=cfg.licence, sha256=sha256_file(weights), architecture={"kind": "adm", **adm.to_dict()},
        extra=dict(steps=step, batch_size=cfg.batch_size, lr=cfg.lr, lr_schedule=cfg.lr_schedule, ema=cfg.ema,
                   precond=cfg.precond, **({"sigma_data": SIGMA_DATA} if cfg.precond == "edm" else {}),
                   crop=cfg.crop, **(init_info or {}),
                   images=n_images, load_size=cfg.load_size, train_size=cfg.size, any_size=any_size,
                   weights_dtype=str(dtype).replace("torch.", ""), value_map=cfg.value_map,
                   hardware=hardware_summary(runs, device), hardware_runs=runs or [],
                   train_seconds=round(seconds, 1), parameters=sum(v.numel() for v in tensors.values())),
    )
    return weights, write_card(card, out / f"{cfg.name}.json")


def write_card(card: PriorCard, path: Path) -> Path:
    """Write a model card atomically."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def hardware_summary(runs: list[dict] | None, device: torch.device) -> str:
    """The card's ``hardware``: one machine if every chunk ran on the same, else each with its steps, e.g. "CPU x86_64
    × 2 threads (steps 1–8,000); CPU x86_64 × 1 threads (steps 8,001–40,000)". No runs: this machine."""
    groups: list[list] = []
    for run in runs or []:
        if groups and groups[-1][0] == run["hardware"] and groups[-1][2] + 1 == run["first"]:
            groups[-1][2] = run["last"]
        else:
            groups.append([run["hardware"], run["first"], run["last"]])
    if not groups:
        return _hardware(device)
    if len(groups) == 1 and groups[0][0] is not None:
        return groups[0][0]
    return "; ".join(f"{hw or 'not recorded (a checkpoint from before per-chunk records)'} "
                     + (f"(steps {a:,}–{b:,})" if b > a else f"(step {a:,})") for hw, a, b in groups)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} × {torch.get_num_threads()} threads"


def images_per_second(arch: str, size: int, channels: int, batch: int, steps: int = 3) -> float:
    """Training throughput (forward + backward + step) of an architecture on this machine, for planning."""
    adm = ADMConfig.from_dict(dict(ARCHITECTURES[arch], image_size=size, in_channels=channels))
    model = ADMUNet(adm)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, channels, size, size)
    t = torch.randint(0, 1000, (batch,)).float()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = F.mse_loss(model(x, t), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


if __name__ == "__main__":  # pragma: no cover - quick throughput probe
    for arch, size, ch in (("tiny", 64, 3), ("small64", 64, 3), ("small128", 128, 1)):
        print(arch, size, ch, f"{images_per_second(arch, size, ch, 16):.1f} img/s")
