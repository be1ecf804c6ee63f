"""Priors from diffusers folders (the optional ``diffusers`` extra): ``load_diffusers(folder) -> DiffusionPrior``.

Layouts understood (local folders only; nothing is downloaded):

* pixel pipelines (``DDPMPipeline``/``DDIMPipeline``, e.g. google/ddpm-celebahq-256): ``unet/`` + ``scheduler/``
  subfolders, or a bare UNet folder (``config.json`` + weights) with a ``scheduler_config.json``;
* latent pipelines (``LDMPipeline``, e.g. CompVis/ldm-celebahq-256): ``unet/`` + ``scheduler/`` + ``vqvae/`` (a
  ``VQModel``) or ``vae/`` (an ``AutoencoderKL``) → a ``priors.latent.LatentPrior``.

The UNet must be an unconditional ``UNet2DModel``. The noise schedule is read from the scheduler config
(``num_train_timesteps``, ``beta_schedule`` "linear" / "scaled_linear" (= LDM's linear) / "squaredcos_cap_v2",
``beta_start``, ``beta_end``, or ``trained_betas``) and computed in float64 as the training code did; diffusers'
own tables are float32, so they agree to ~1e-7. The wrapped network returns ε: "epsilon" outputs as they are,
"v_prediction" as ε = √ᾱ·v + √(1−ᾱ)·x_t and "sample" as ε = (x_t − √ᾱ·x̂₀)/√(1−ᾱ), with ᾱ at the (possibly fractional)
timestep interpolated exactly as ``DiffusionPrior.alpha_bar`` does. A UNet with 2·C output channels keeps the
variance channels when the scheduler's ``variance_type`` is "learned_range" (the ADM convention v ∈ [-1, 1]);
otherwise ("learned": a log-variance) they are dropped.

Latents follow the pipelines: VQ latents are the encoder output before quantisation and the decoder quantises
(``VQModel.decode``, as LDM and ReSample do), with scale 1 — the VQ-regularised space of LDM is not rescaled; a
``scaling_factor`` in a VQ config is honoured only when it differs from diffusers' KL default 0.18215, which old VQ
configs inherit without meaning it (diffusers issue #6725). KL latents are the posterior mean,
``z = (mean − shift_factor)·scaling_factor`` from the vae config.

Weights are read with safetensors when the folder has them, otherwise with ``torch.load(weights_only=True)``, and
must match the config exactly (every key and shape; diffusers' legacy attention names are renamed first): a missing
or unexpected weight is an error, never a random initialisation.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .base import DiffusionPrior, PriorCard, PriorError, cosine_betas, ldm_linear_betas, linear_betas
from .weights import _short, load_strict, read_state_dict

__all__ = ["load_diffusers", "DiffusersEps", "schedule_from_config"]

INSTALL = "pip install 'restore[diffusers]'"
DEFAULT_SCALING = 0.18215
#: schedulers whose config may omit beta_schedule (their defaults are DDPM's linear 1e-4 … 0.02)
VP_SCHEDULERS = {"DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
                 "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "HeunDiscreteScheduler"}
#: weight file names, in order of preference (safetensors before any pickle)
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin")


def _diffusers():
    try:
        import diffusers  # noqa: F401
        from diffusers import AutoencoderKL, UNet2DModel, VQModel
    except ImportError as exc:
        raise PriorError(f"loading a diffusers folder needs the diffusers package ({_short(exc)}); install it with "
                         f"{INSTALL}.") from None
    return UNet2DModel, VQModel, AutoencoderKL


# ---------------------------------------------------------------------------------------------------------------------
# schedule


def schedule_from_config(sched: dict[str, Any], source: str = "scheduler") -> tuple[Tensor, str, dict[str, Any]]:
    """(betas in float64, the PriorCard schedule name, what the card records) from a diffusers scheduler config.

    Missing keys take the defaults DDPMScheduler/DDIMScheduler have (1000 steps, "linear", 1e-4 … 0.02, epsilon)."""
    cls = sched.get("_class_name", "")
    if "beta_schedule" not in sched and sched.get("trained_betas") is None and cls not in VP_SCHEDULERS:
        raise PriorError(f"'{source}' ({cls or 'unknown class'}) is not a discrete VP (DDPM-type) scheduler: it has "
                         f"no beta_schedule; restore needs the scheduler a DDPM/DDIM/LDM pipeline was trained with.")
    T = int(sched.get("num_train_timesteps", 1000))
    kind = sched.get("beta_schedule", "linear")
    start, end = float(sched.get("beta_start", 1e-4)), float(sched.get("beta_end", 0.02))
    if T < 2:
        raise PriorError(f"'{source}' has num_train_timesteps {T}; a schedule needs at least 2 steps.")
    if sched.get("rescale_betas_zero_snr"):
        raise PriorError(f"'{source}' rescales the betas to zero terminal SNR (rescale_betas_zero_snr), whose last "
                         f"step has σ = ∞; restore's σ-space view cannot represent it.")
    record: dict[str, Any] = dict(scheduler=sched.get("_class_name", ""), num_train_timesteps=T)
    if sched.get("trained_betas") is not None:
        betas = torch.tensor(sched["trained_betas"], dtype=torch.float64).reshape(-1)
        if betas.numel() != T:
            raise PriorError(f"'{source}' has {betas.numel()} trained_betas but num_train_timesteps {T}.")
        name = "custom"
        record.update(beta_schedule="trained_betas")
    elif kind == "linear":
        betas, name = linear_betas(T, start, end), "linear"
        record.update(beta_schedule=kind, beta_start=start, beta_end=end)
    elif kind == "scaled_linear":
        betas, name = ldm_linear_betas(T, start, end), "ldm-linear"
        record.update(beta_schedule=kind, beta_start=start, beta_end=end)
    elif kind == "squaredcos_cap_v2":
        betas, name = cosine_betas(T), "cosine"
        record.update(beta_schedule=kind)
    else:
        raise PriorError(f"'{source}' uses beta_schedule '{kind}', which restore does not support; supported: "
                         f"linear, scaled_linear, squaredcos_cap_v2 (or trained_betas).")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise PriorError(f"'{source}' gives betas outside (0, 1) (beta_start {start}, beta_end {end}); check it.")
    prediction = sched.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction", "sample"):
        raise PriorError(f"'{source}' has prediction_type '{prediction}'; restore supports epsilon, v_prediction "
                         f"and sample.")
    record.update(prediction_type=prediction, variance_type=sched.get("variance_type", "fixed_small"))
    return betas, name, record


# ---------------------------------------------------------------------------------------------------------------------
# ε wrapper


class DiffusersEps(nn.Module):
    """``net(x_t, t)`` → ε̂ (and the learned-range variance channels when kept) from a diffusers ``UNet2DModel``."""

    def __init__(self, unet: nn.Module, betas: Tensor, prediction_type: str = "epsilon",
                 keep_variance: bool = False):
        super().__init__()
        self.unet = unet
        self.prediction_type = prediction_type
        self.keep_variance = keep_variance
        self.learned_time = getattr(unet.config, "time_embedding_type", "positional") == "learned"
        ab = torch.cumprod(1 - betas.double(), 0)
        self.register_buffer("_log_sigmas", 0.5 * torch.log((1 - ab) / ab), persistent=False)

    def _alpha_bar(self, t: Tensor, like: Tensor) -> Tensor:
        # the same interpolation as DiffusionPrior.sigma_of_t / alpha_bar (linear in log σ between integer steps)
        T = self._log_sigmas.numel()
        t = t.to(self._log_sigmas.device, torch.float64).clamp(0, T - 1)
        lo = t.floor().long().clamp(max=T - 2)
        frac = t - lo
        sigma = ((1 - frac) * self._log_sigmas[lo] + frac * self._log_sigmas[lo + 1]).exp().float()
        a = (1.0 / (1.0 + sigma.double() ** 2)).float().to(like.device)
        return a.reshape(-1, *([1] * (like.dim() - 1)))

    def forward(self, x: Tensor, t: "Tensor | float") -> Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.dim() == 0 or t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        t_in = t.round().clamp(0, self._log_sigmas.numel() - 1).long() if self.learned_time else t
        out = self.unet(x, t_in).sample
        c = x.shape[1]
        pred, var = (out[:, :c], out[:, c:]) if out.shape[1] == 2 * c else (out, None)
        if self.prediction_type == "v_prediction":
            a = self._alpha_bar(t, x)
            pred = a.sqrt() * pred + (1 - a).sqrt() * x
        elif self.prediction_type == "sample":
            a = self._alpha_bar(t, x)
            pred = (x - a.sqrt() * pred) / (1 - a).sqrt()
        if self.keep_variance and var is not None:
            return torch.cat([pred, var], dim=1)
        return pred


class _VQ(nn.Module):
    """A diffusers ``VQModel`` as an autoencoder: encode = latents before quantisation; decode quantises."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.latent_channels = int(cfg.vq_embed_dim or cfg.latent_channels)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)

    def encode(self, x: Tensor) -> Tensor:
        return self.model.encode(x).latents

    def decode(self, h: Tensor) -> Tensor:
        return self.model.decode(h).sample


class _KL(nn.Module):
    """A diffusers ``AutoencoderKL``: encode = posterior mean; decode as diffusers does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.latent_channels = int(cfg.latent_channels)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)

    def encode(self, x: Tensor) -> Tensor:
        return self.model.encode(x).latent_dist.mean

    def decode(self, z: Tensor) -> Tensor:
        return self.model.decode(z).sample


# ---------------------------------------------------------------------------------------------------------------------
# folder reading


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PriorError(f"the {what} '{path}' cannot be read as JSON ({_short(exc)}); download it again.") from None
    if not isinstance(data, dict):
        raise PriorError(f"the {what} '{path}' is not a JSON object; download it again.")
    return data


def _weight_files(d: Path) -> list[Path]:
    """The weights of a diffusers model folder: safetensors first, then .bin; sharded files via their index."""
    for name in WEIGHT_NAMES:
        index = d / f"{name}.index.json"
        if (d / name).is_file():
            return [d / name]
        if index.is_file():
            shards = sorted(set(_read_json(index, "weights index").get("weight_map", {}).values()))
            missing = [s for s in shards if not (d / s).is_file()]
            if not shards or missing:
                raise PriorError(f"'{d}' is missing weight shards {', '.join(missing[:3]) or '(empty index)'}; "
                                 f"download the folder again.")
            return [d / s for s in shards]
    found = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
    if len(found) == 1:  # e.g. a variant such as diffusion_pytorch_model.fp16.safetensors
        return found
    raise PriorError(f"'{d}' has a config.json but no weights (diffusion_pytorch_model.safetensors or .bin); "
                     f"download the weights into it.")


def _load_model(cls, d: Path, what: str) -> tuple[nn.Module, dict]:
    """A diffusers model built from ``d/config.json`` holding exactly the weights in ``d``."""
    config = _read_json(d / "config.json", f"{what} config")
    expected_cls = cls.__name__
    got_cls = config.get("_class_name", expected_cls)
    if got_cls != expected_cls:
        raise PriorError(f"'{d}' holds a {got_cls}, not a {expected_cls}; restore needs an unconditional "
                         f"UNet2DModel and a VQModel or AutoencoderKL.")
    try:
        model = cls.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any constructor failure means a config this diffusers cannot build
        raise PriorError(f"'{d / 'config.json'}' is not a valid {expected_cls} config for this diffusers version "
                         f"({_short(exc)}).") from None
    state: dict[str, Tensor] = {}
    for f in _weight_files(d):
        state.update(read_state_dict(f)[0])
    fix = getattr(model, "_fix_state_dict_keys_on_load", None)  # legacy attention names (query/key/value/proj_attn)
    if callable(fix):
        state = fix(state) or state
    return load_strict(model, state, str(d), "the folder mixes files of different models: download it again",
                       what=f"the weights in '{d}' do not match its config.json"), config


def _model_card(folder: Path) -> dict[str, str]:
    """domain / training_data / licence from the YAML front matter of a Hugging Face README.md, when it says."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(errors="replace")
    m = re.match(r"\A---\s*\n(.*?)\n---", text, re.S)
    if not m:
        return {}
    fields: dict[str, list[str]] = {}
    key = None
    for line in m.group(1).splitlines():
        if re.match(r"^[A-Za-z_][\w-]*\s*:", line):
            key, _, value = line.partition(":")
            key = key.strip()
            value = value.strip().strip("'\"")
            fields[key] = [value] if value else []
        elif key and line.strip().startswith("- "):
            fields[key].append(line.strip()[2:].strip().strip("'\""))
    out = {}
    if fields.get("datasets"):
        out["domain"] = out["training_data"] = ", ".join(fields["datasets"])
    if fields.get("license"):
        out["licence"] = fields["license"][0]
    return out


def _find_component(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name / "config.json").is_file():
            return folder / name
    return None


def load_diffusers(folder: "str | Path") -> DiffusionPrior:
    """A ``DiffusionPrior`` (pixel) or ``LatentPrior`` (VQ/KL autoencoder) from a local diffusers folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PriorError(f"'{folder}' is not a folder; give a diffusers pipeline or UNet folder.")
    UNet2DModel, VQModel, AutoencoderKL = _diffusers()
    index = _read_json(folder / "model_index.json", "pipeline index") if (folder / "model_index.json").is_file() \
        else {}

    # the UNet: unet/ or the folder itself
    unet_dir = _find_component(folder, ("unet",)) or (folder if (folder / "config.json").is_file() else None)
    if unet_dir is None:
        raise PriorError(f"'{folder}' has no UNet: neither unet/config.json nor config.json is there; give a diffusers "
                         f"pipeline folder (unet/, scheduler/) or a UNet2DModel folder.")
    # the scheduler: scheduler/, or scheduler_config.json beside the UNet
    candidates = [folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json",
                  unet_dir / "scheduler_config.json"]
    sched_path = next((p for p in candidates if p.is_file()), None)
    if sched_path is None:
        raise PriorError(f"'{folder}' has no scheduler config (looked for scheduler/scheduler_config.json and "
                         f"scheduler_config.json); copy the scheduler_config.json of the pipeline the UNet was "
                         f"trained with — restore does not guess the noise schedule.")
    # the autoencoder, when the pipeline has one
    listed = [n for n in ("vqvae", "vae") if isinstance(index.get(n), list) and any(index[n])]
    ae_dir = _find_component(folder, tuple(listed) or ("vqvae", "vae"))
    if ae_dir is None:
        if listed:
            raise PriorError(f"'{folder}/model_index.json' lists a '{listed[0]}' autoencoder but the folder has no "
                             f"{listed[0]}/config.json; download the whole pipeline folder.")
    sched = _read_json(sched_path, "scheduler config")
    betas, schedule_name, record = schedule_from_config(sched, str(sched_path))

    unet_cfg = _read_json(unet_dir / "config.json", "UNet config")  # checked before any weights are read
    if unet_cfg.get("time_embedding_type", "positional") == "fourier":
        raise PriorError(f"'{unet_dir}' is a continuous-time score model (fourier time embedding, NCSN++/VE); "
                         f"restore needs a discrete-timestep (DDPM) UNet2DModel.")
    if unet_cfg.get("class_embed_type") is not None or unet_cfg.get("num_class_embeds") is not None:
        raise PriorError(f"'{unet_dir}' is a class-conditional UNet2DModel; restore needs an unconditional one.")
    unet, unet_cfg = _load_model(UNet2DModel, unet_dir, "UNet")
    c_in, c_out = int(unet_cfg.get("in_channels", 3)), int(unet_cfg.get("out_channels", 3))
    if c_out not in (c_in, 2 * c_in):
        raise PriorError(f"'{unet_dir}' has {c_in} input and {c_out} output channels; an ε-network has as many "
                         f"outputs as inputs (or twice as many with a learned variance).")
    learned_range = c_out == 2 * c_in and record["variance_type"] == "learned_range"
    net = DiffusersEps(unet, betas, record["prediction_type"], keep_variance=learned_range)

    size = unet_cfg.get("sample_size")
    if isinstance(size, (list, tuple)):
        size = int(size[0]) if len(set(size)) == 1 else None
    size = int(size) if size else None
    meta = _model_card(folder)
    architecture = {"kind": "diffusers", "unet": {k: v for k, v in unet_cfg.items() if not k.startswith("_")}}
    extra: dict[str, Any] = dict(record, source=str(folder), pipeline=index.get("_class_name", ""),
                                 unet_out_channels=c_out)
    card = PriorCard(name=folder.name, image_size=size, channels=c_in, domain=meta.get("domain", "unknown"),
                     schedule=schedule_name, timesteps=len(betas), parameterisation="eps",
                     learned_variance=learned_range, training_data=meta.get("training_data", ""),
                     licence=meta.get("licence", ""), architecture=architecture, extra=extra)
    if ae_dir is None:
        return DiffusionPrior(net, card, betas=betas).eval()

    from .latent import LatentPrior

    ae_cfg = _read_json(ae_dir / "config.json", "autoencoder config")
    kind = ae_cfg.get("_class_name", "")
    if kind == "VQModel":
        model, ae_cfg = _load_model(VQModel, ae_dir, "autoencoder")
        ae: nn.Module = _VQ(model)
        scale = float(ae_cfg.get("scaling_factor", DEFAULT_SCALING))
        scale = 1.0 if math.isclose(scale, DEFAULT_SCALING) else scale
        shift = 0.0
    elif kind == "AutoencoderKL":
        model, ae_cfg = _load_model(AutoencoderKL, ae_dir, "autoencoder")
        ae = _KL(model)
        if ae_cfg.get("latents_mean") is not None or ae_cfg.get("latents_std") is not None:
            raise PriorError(f"'{ae_dir}' normalises its latents per channel (latents_mean/latents_std), which "
                             f"restore does not support.")
        scale = float(ae_cfg.get("scaling_factor") or DEFAULT_SCALING)
        shift = float(ae_cfg.get("shift_factor") or 0.0)
    else:
        raise PriorError(f"'{ae_dir}' holds a {kind or 'model of unknown class'}; restore's latent priors need a "
                         f"VQModel or an AutoencoderKL.")
    if ae.latent_channels != c_in:
        raise PriorError(f"the UNet in '{unet_dir}' takes {c_in}-channel latents but the autoencoder in '{ae_dir}' "
                         f"makes {ae.latent_channels}-channel ones; they are not from the same pipeline.")
    f = ae.downsample
    card.channels = int(ae_cfg.get("in_channels", 3))
    card.image_size = size * f if size else None
    card.latent = True
    card.architecture["autoencoder"] = {"kind": kind, **{k: v for k, v in ae_cfg.items() if not k.startswith("_")}}
    card.extra.update(downsample=f, autoencoder=ae_dir.name)
    if size:
        card.extra["latent_shape"] = [c_in, size, size]
    return LatentPrior(net, card, ae, scale_factor=scale, shift_factor=shift, betas=betas).eval()
