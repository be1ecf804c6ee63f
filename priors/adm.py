"""The ADM UNet of Dhariwal & Nichol (openai/guided-diffusion ``UNetModel``), written for ``restore``.

Module names, parameter shapes, initialisation and arithmetic follow guided-diffusion, so its public checkpoints
(``ffhq_10m.pt`` of DPS/DAPS, OpenAI's ``256x256_diffusion_uncond.pt``) load with ``load_state_dict(strict=True)``
and give the same outputs; the same class builds the small configurations we train ourselves.

Layout (``L`` = number of levels = ``len(channel_mult)``, ``n`` = ``num_res_blocks``, ``E = 4·num_channels``)::

    time_embed        Linear(C, E) · SiLU · Linear(E, E) on the sinusoidal embedding of the (DDPM) timestep
    label_emb         Embedding(num_classes, E)                            only with class_cond
    input_blocks.0    3×3 conv  in_channels → C·mult[0]
    input_blocks.k    per level: n × [ResBlock (+ AttentionBlock)], then (not on the last level) a ×½ step:
                      ResBlock(down=True) if resblock_updown, else Downsample (strided 3×3 conv, or 2×2 average)
    middle_block      ResBlock · AttentionBlock · ResBlock
    output_blocks.k   per level, deepest first: (n+1) × [ResBlock on concat(h, skip) (+ AttentionBlock)], the last
                      one of each level (except level 0) followed by a ×2 step (ResBlock(up=True) or Upsample)
    out               GroupNorm32 · SiLU · 3×3 conv (zero-initialised)  C·mult[0] → out_channels

Attention sits at the levels whose downsampling factor ``ds = 2**level`` is one of ``image_size // r`` for the
resolutions ``r`` in ``attention_resolutions`` ("32,16,8"), as in guided-diffusion's ``create_model``. Nothing in the
network depends on the spatial size, so any ``H, W`` divisible by ``2**(L-1)`` works (a prior trained on 64×64 crops
runs on a whole photo; its attention then spans the whole image at that level).

Deliberate differences from guided-diffusion, none of which changes a key, a shape or (beyond float rounding) an
output: attention uses ``F.scaled_dot_product_attention`` (the same softmax(qᵀk/√d)·v, with fused kernels);
timesteps may be a scalar; ``use_checkpoint`` uses ``torch.utils.checkpoint`` and only while training;
``use_fp16`` is recorded but the weights stay float32 until ``convert_to_fp16()`` is called (as in guided-diffusion's
scripts); ``conv_resample`` (always True in ``create_model``) is exposed for key parity with ``UNetModel``.
One added argument, for the priors we train ourselves: ``norm_groups``, the groups of every GroupNorm (default 32,
guided-diffusion's GroupNorm32; keys and shapes do not depend on it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _grad_checkpoint

__all__ = [
    "ADMConfig",
    "ADMConfigError",
    "ADMStateDictError",
    "ADMUNet",
    "DEFAULT_CHANNEL_MULT",
    "expected_shapes",
    "infer_config",
    "state_dict_mismatch",
    "timestep_embedding",
]

#: guided-diffusion ``create_model``'s channel multipliers for ``channel_mult=""``, by image size.
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
NORM_GROUPS = 32  # guided-diffusion's GroupNorm32: every GroupNorm of its architecture has 32 groups


class ADMConfigError(ValueError, TypeError):
    """An ADM configuration that is malformed (wrong type) or inconsistent (e.g. channels not divisible by 32)."""


class ADMStateDictError(RuntimeError):
    """A state dict whose keys or shapes do not fit the architecture it is loaded into."""


# ---------------------------------------------------------------------------------------------------------------------
# configuration


def _fmt_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _coerce(name: str, kind: type, value: Any) -> Any:
    """Convert ``value`` for the field ``name`` of type ``kind``, or raise ADMConfigError with a clear message."""
    bad = ADMConfigError(f"ADM config: {name!r} must be {kind.__name__}, got {value!r} ({type(value).__name__})")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if kind is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    # str fields (channel_mult, attention_resolutions): YAML gives ints ("attention_resolutions: 16") and code may
    # give sequences of numbers; both become guided-diffusion's comma-separated string.
    if isinstance(value, str):
        return value.replace(" ", "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt_number(value)
    if isinstance(value, Sequence) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return ",".join(_fmt_number(v) for v in value)
    raise ADMConfigError(
        f"ADM config: {name!r} must be a comma-separated string or a list of numbers, got {value!r} "
        f"({type(value).__name__})"
    )


_FIELD_KINDS = {"int": int, "bool": bool, "float": float, "str": str}


def _parse_numbers(name: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p != "")
    except ValueError:
        raise ADMConfigError(f"ADM config: {name!r} must be comma-separated numbers, got {text!r}") from None


@dataclass(frozen=True)
class ADMConfig:
    """guided-diffusion's model arguments (``script_util.create_model``), with its names and defaults.

    ``channel_mult`` is "" (the default for ``image_size``: 512/256/128/64) or e.g. "1,2,2,2";
    ``attention_resolutions`` lists feature-map sizes *at image_size* ("32,16,8"), "" for none besides the middle
    block. ``num_head_channels`` > 0 fixes the width per head (then ``num_heads`` is ignored); otherwise
    ``num_heads`` heads (``num_heads_upsample`` in the decoder, -1 = same). Values are type-checked and coerced
    (a YAML int 16 for attention_resolutions, "true" for a bool) on construction.
    """

    image_size: int = 256
    in_channels: int = 3
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: str = ""
    learn_sigma: bool = False
    class_cond: bool = False
    num_classes: int = 1000
    attention_resolutions: str = "16"
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    dropout: float = 0.0
    resblock_updown: bool = False
    conv_resample: bool = True
    use_fp16: bool = False
    use_new_attention_order: bool = False
    use_checkpoint: bool = False
    #: ``restore``'s one addition: the groups of every GroupNorm. guided-diffusion fixes 32 (its checkpoints need
    #: it; the key set and shapes do not depend on it). At 32 channels, 32 groups normalise each feature channel
    #: on its own (instance norm); fewer groups keep the channels' relative levels (see docs/priors.md, faces64).
    norm_groups: int = NORM_GROUPS

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # annotations are strings here (postponed evaluation)
            kind = _FIELD_KINDS[f.type] if isinstance(f.type, str) else f.type
            object.__setattr__(self, f.name, _coerce(f.name, kind, getattr(self, f.name)))
        self._validate()

    # ---- derived quantities -----------------------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        """ε (and, with learn_sigma, the variance interpolation v): in_channels · (2 if learn_sigma else 1)."""
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def channel_mults(self) -> tuple[float, ...]:
        if self.channel_mult == "":
            if self.image_size not in DEFAULT_CHANNEL_MULT:
                raise ADMConfigError(
                    f"ADM config: no default channel_mult for image_size {self.image_size} "
                    f"(defaults exist for {sorted(DEFAULT_CHANNEL_MULT)}); give channel_mult, e.g. '1,2,2,2'"
                )
            return DEFAULT_CHANNEL_MULT[self.image_size]
        return _parse_numbers("channel_mult", self.channel_mult)

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsampling factors with attention: ``image_size // r`` for each resolution r (as create_model)."""
        res = _parse_numbers("attention_resolutions", self.attention_resolutions)
        return tuple(self.image_size // int(r) for r in res)

    @property
    def num_levels(self) -> int:
        return len(self.channel_mults)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this: 2**(levels-1)."""
        return 2 ** (self.num_levels - 1)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.num_channels

    def level_channels(self) -> list[int]:
        """Feature channels of each level: int(mult · num_channels), as guided-diffusion computes them."""
        return [int(m * self.num_channels) for m in self.channel_mults]

    def heads_for(self, channels: int, decoder: bool = False) -> int:
        if self.num_head_channels > 0:
            return channels // self.num_head_channels
        if decoder and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads

    # ---- checks -----------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ADMConfigError(f"ADM config: {msg}")

        for name in ("image_size", "in_channels", "num_channels"):
            need(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        need(self.num_res_blocks >= 0, f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(not self.class_cond or self.num_classes > 0, "num_classes must be positive with class_cond")
        mults = self.channel_mults
        need(len(mults) > 0 and all(m > 0 for m in mults),
             f"channel_mult must be positive numbers, got {self.channel_mult!r}")
        res = _parse_numbers("attention_resolutions", self.attention_resolutions)
        need(all(r > 0 and float(r).is_integer() for r in res),
             f"attention_resolutions must be positive integers, got {self.attention_resolutions!r}")
        need(self.num_head_channels == -1 or self.num_head_channels > 0,
             f"num_head_channels must be -1 or positive, got {self.num_head_channels}")
        need(self.num_heads > 0, f"num_heads must be positive, got {self.num_heads}")
        need(self.num_heads_upsample == -1 or self.num_heads_upsample > 0,
             f"num_heads_upsample must be -1 or positive, got {self.num_heads_upsample}")
        need(self.norm_groups > 0, f"norm_groups must be positive, got {self.norm_groups}")
        widths = self.level_channels()
        for w in widths:
            need(w > 0 and w % self.norm_groups == 0,
                 f"every level's channels must be a multiple of {self.norm_groups} (norm_groups, GroupNorm groups); "
                 f"channel_mult {self.channel_mult or mults} × num_channels {self.num_channels} gives {widths}")
        # attention widths: the levels with attention, and the middle block (always)
        attn = {widths[lvl] for lvl in range(len(widths)) if 2**lvl in self.attention_ds} | {widths[-1]}
        for w in sorted(attn):
            if self.num_head_channels > 0:
                need(w % self.num_head_channels == 0,
                     f"attention width {w} is not divisible by num_head_channels {self.num_head_channels}")
            else:
                for h in {self.num_heads, self.heads_for(w, decoder=True)}:
                    need(w % h == 0, f"attention width {w} is not divisible by {h} heads")

    # ---- (de)serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields (JSON-ready); ``from_dict(to_dict())`` gives an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ADMConfig":
        """Build from guided-diffusion-style arguments; unknown keys (diffusion settings, paths) are ignored.

        ``out_channels`` may be present (it is derived); it must then agree with in_channels and learn_sigma."""
        if not isinstance(d, Mapping):
            raise ADMConfigError(f"ADM config must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        if "out_channels" in d and _coerce("out_channels", int, d["out_channels"]) != cfg.out_channels:
            raise ADMConfigError(
                f"ADM config: out_channels {d['out_channels']} disagrees with in_channels {cfg.in_channels} and "
                f"learn_sigma {cfg.learn_sigma} (which give {cfg.out_channels})"
            )
        return cfg

    def replace(self, **changes: Any) -> "ADMConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------------------------------
# building blocks


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos(t·f_i), sin(t·f_i)], f_i = max_period^(-i/half), i < half = dim//2 (float32;
    fractional t allowed); an odd ``dim`` gets a trailing zero column. Shape (N,) → (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (32 groups unless told), computed in float32 whatever the input dtype, cast back afterwards."""

    def __init__(self, channels: int, groups: int = NORM_GROUPS):
        super().__init__(groups, channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


def _zeroed(module: nn.Module) -> nn.Module:
    """guided-diffusion's zero_module: output layers of residual branches start at zero (blocks start as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class EmbBlock(nn.Module):
    """A block whose forward also takes the (timestep + label) embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class EmbSequential(nn.Sequential):
    """nn.Sequential that hands the embedding to the EmbBlocks among its children (TimestepEmbedSequential)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, EmbBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """×½: 3×3 stride-2 conv (``op``) or, without conv_resample, 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """×2 nearest neighbour, then (with conv_resample) a 3×3 conv named ``conv``."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(EmbBlock):
    """Residual block conditioned on the embedding.

    h = conv(SiLU(GN(x)))  [resampled between the SiLU and the conv when up/down]
    scale-shift norm: h = out_rest(GN(h)·(1 + s) + b) with (s, b) = Linear(SiLU(emb)); else out(h + Linear(SiLU(emb)))
    return skip(x) + h, skip = identity or a 1×1 conv when the channel count changes (x resampled likewise).
    """

    def __init__(self, channels: int, emb_dim: int, out_channels: int, dropout: float, scale_shift: bool,
                 up: bool = False, down: bool = False, use_checkpoint: bool = False, groups: int = NORM_GROUPS):
        super().__init__()
        self.scale_shift = scale_shift
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if scale_shift else out_channels  # (scale, shift) or an additive bias
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, groups), nn.SiLU(), nn.Dropout(p=dropout),
            _zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return _grad_checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


def qkv_attention(qkv: Tensor, heads: int, legacy_order: bool) -> Tensor:
    """Multi-head self-attention on a packed (B, 3·C, T) tensor → (B, C, T).

    ``legacy_order`` (QKVAttentionLegacy, the checkpoints' layout): channels are [head][q|k|v][d];
    otherwise (QKVAttention): [q|k|v][head][d]. softmax(qᵀk/√d)·v per head, d = C / heads."""
    b, width, t = qkv.shape
    d = width // (3 * heads)
    if legacy_order:
        q, k, v = qkv.reshape(b * heads, 3 * d, t).split(d, dim=1)
    else:
        q, k, v = (z.reshape(b * heads, d, t) for z in qkv.chunk(3, dim=1))
    # (bH, T, d) with unit stride in d: strided views send the CPU to the O(T²)-memory math kernel, contiguous ones to
    # the fused (flash) kernel, 5× faster at T = 4096 and with O(T) memory
    q, k, v = (z.transpose(1, 2).contiguous() for z in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)  # (bH, T, d)
    return out.transpose(1, 2).reshape(b, heads * d, t)


class AttentionBlock(nn.Module):
    """x + proj_out(attention(qkv(GN(x)))) over all spatial positions; qkv and proj_out are 1-D 1×1 convs."""

    def __init__(self, channels: int, heads: int, legacy_order: bool = True, use_checkpoint: bool = False,
                 groups: int = NORM_GROUPS):
        super().__init__()
        self.heads = heads
        self.legacy_order = legacy_order
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm32(channels, groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return _grad_checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.heads, self.legacy_order)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


# ---------------------------------------------------------------------------------------------------------------------
# the network


class ADMUNet(nn.Module):
    """guided-diffusion's UNetModel. ``forward(x, timesteps, y=None)`` → (B, out_channels, H, W).

    ``timesteps`` are DDPM step indices (0…T-1; floats allowed), a scalar or one per image. The first
    ``in_channels`` output channels are ε; with learn_sigma the rest are the variance interpolation v.
    Build on ``device="meta"`` to inspect keys/shapes without allocating memory.
    """

    def __init__(self, cfg: ADMConfig | Mapping[str, Any], *, device: torch.device | str | None = None):
        super().__init__()
        cfg = cfg if isinstance(cfg, ADMConfig) else ADMConfig.from_dict(cfg)
        self.cfg = cfg
        if device is not None:
            with torch.device(device):
                self._build(cfg)
        else:
            self._build(cfg)

    def _build(self, cfg: ADMConfig) -> None:
        C, E = cfg.num_channels, cfg.time_embed_dim
        widths, attn_ds = cfg.level_channels(), set(cfg.attention_ds)
        legacy = not cfg.use_new_attention_order

        def res(cin: int, cout: int, **kw: bool) -> ResBlock:
            return ResBlock(cin, E, cout, cfg.dropout, cfg.use_scale_shift_norm,
                            use_checkpoint=cfg.use_checkpoint, groups=cfg.norm_groups, **kw)

        def attn(ch: int, decoder: bool = False) -> AttentionBlock:
            return AttentionBlock(ch, cfg.heads_for(ch, decoder), legacy, cfg.use_checkpoint, cfg.norm_groups)

        self.time_embed = nn.Sequential(nn.Linear(C, E), nn.SiLU(), nn.Linear(E, E))
        if cfg.class_cond:
            self.label_emb = nn.Embedding(cfg.num_classes, E)

        # encoder: remember each block's output channels, they come back as skip connections in the decoder
        ch = int(cfg.channel_mults[0] * C)
        self.input_blocks = nn.ModuleList([EmbSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, width)]
                ch = width
                if ds in attn_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(EmbSequential(*layers))
                skip_chans.append(ch)
            if level != len(widths) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(EmbSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = EmbSequential(res(ch, ch), attn(ch), res(ch, ch))

        # decoder: num_res_blocks + 1 blocks per level, each eating one skip; the last one of a level goes up ×2
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), widths[level])]
                ch = widths[level]
                if ds in attn_ds:
                    layers.append(attn(ch, decoder=True))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch, cfg.norm_groups), nn.SiLU(),
            _zeroed(nn.Conv2d(int(cfg.channel_mults[0] * C), cfg.out_channels, 3, padding=1)),
        )

    # ---- forward ----------------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, timesteps: Tensor | float, y: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"ADMUNet expects (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        m = cfg.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"ADMUNet with {cfg.num_levels} levels needs H and W divisible by {m}, got {tuple(x.shape[-2:])}; "
                "pad the image (e.g. reflect) to the next multiple"
            )
        if (y is not None) != cfg.class_cond:
            raise ValueError("give class labels y if and only if the model is class-conditional")
        b = x.shape[0]
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0 or t.numel() == 1:
            t = t.reshape(1).expand(b)
        if t.shape != (b,):
            raise ValueError(f"timesteps must be a scalar or have shape ({b},), got {tuple(t.shape)}")

        emb = self.time_embed(timestep_embedding(t, cfg.num_channels).to(self.time_embed[0].weight.dtype))
        if cfg.class_cond:
            emb = emb + self.label_emb(y)

        h = x.to(self.input_blocks[0][0].weight.dtype)  # the torso's dtype (float16 after convert_to_fp16)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))

    # ---- precision (guided-diffusion's convert_to_fp16: only the torso's convolutions change dtype) -----------------
    def _torso_convs(self):
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    yield m

    def convert_to_fp16(self) -> "ADMUNet":
        for m in self._torso_convs():
            m.half()
        return self

    def convert_to_fp32(self) -> "ADMUNet":
        for m in self._torso_convs():
            m.float()
        return self

    # ---- loading ----------------------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """nn.Module.load_state_dict, with a short explicit error (missing/unexpected keys, shape mismatches)
        when ``strict`` and the checkpoint does not fit this configuration."""
        if strict:
            problems = state_dict_mismatch({k: v.shape for k, v in self.state_dict().items()}, state_dict)
            if problems:
                raise ADMStateDictError(
                    f"checkpoint does not fit this ADM config ({len(problems)} problem(s)): "
                    + "; ".join(problems[:6]) + ("; …" if len(problems) > 6 else "")
                    + ". infer_config(state_dict) reads the architecture from a checkpoint."
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], cfg: ADMConfig | Mapping[str, Any] | None = None,
                        **infer_kwargs: Any) -> "ADMUNet":
        """A model holding ``state_dict``'s tensors (no copy, no random init): ``cfg`` or ``infer_config(state_dict,
        **infer_kwargs)`` — give num_head_channels/num_heads when they differ from the public checkpoints'."""
        if cfg is None:
            cfg = infer_config(state_dict, **infer_kwargs)
        model = cls(cfg, device="meta")
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# state-dict tools


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (v.shape if hasattr(v, "shape") else v))


def expected_shapes(cfg: ADMConfig | Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the configuration and its shape (built on the meta device: no memory)."""
    return {k: tuple(v.shape) for k, v in ADMUNet(cfg, device="meta").state_dict().items()}


def state_dict_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two key → shape (or tensor) mappings; empty when they agree."""
    problems = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing:
        problems.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:4])
                        + (", …" if len(missing) > 4 else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:4])
                        + (", …" if len(unexpected) > 4 else ""))
    for k in expected:
        if k in got and _shape(expected[k]) != _shape(got[k]):
            problems.append(f"{k}: checkpoint {list(_shape(got[k]))} vs model {list(_shape(expected[k]))}")
    return problems


def infer_config(state_dict: Mapping[str, Any], image_size: int = 256, *, num_heads: int = 4,
                 num_head_channels: int = 64, num_heads_upsample: int = -1, dropout: float = 0.0,
                 use_new_attention_order: bool = False) -> ADMConfig:
    """Read an ADM architecture from a state dict's keys and shapes (values: tensors, meta tensors or shapes).

    Recovered: num_channels, in_channels, learn_sigma, class_cond/num_classes, num_res_blocks, channel_mult,
    attention levels, use_scale_shift_norm, resblock_updown, conv_resample. Not recoverable from shapes and so taken
    as arguments: ``image_size`` (only scales attention_resolutions: they are written as image_size // ds), the head
    layout (defaults: num_head_channels 64, as both public 256² checkpoints), dropout, the attention order and
    ``norm_groups`` (guided-diffusion's 32; a prior trained with other groups says so in its card).
    The result is checked by rebuilding it: it has exactly the keys and shapes of ``state_dict``.
    """
    shapes = {k: _shape(v) for k, v in state_dict.items()}

    def get(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ADMStateDictError(f"not an ADM (guided-diffusion UNetModel) state dict: no {key!r}")
        return shapes[key]

    C = get("time_embed.0.weight")[1]
    in_ch = get("input_blocks.0.0.weight")[1]
    out_ch = get("out.2.weight")[0]
    if out_ch not in (in_ch, 2 * in_ch):
        raise ADMStateDictError(f"ADM output has {out_ch} channels for {in_ch} input channels (expected ×1 or ×2)")
    mid_out = get("middle_block.0.out_layers.3.weight")[0]
    scale_shift = get("middle_block.0.emb_layers.1.weight")[0] == 2 * mid_out

    def block_ids(prefix: str) -> set[int]:
        return {int(k.split(".")[1]) for k in shapes if k.startswith(prefix + ".")}

    n_out = max(block_ids("output_blocks")) + 1
    in_ids = block_ids("input_blocks")
    # num_res_blocks: the first ×½ step sits at input block num_res_blocks + 1; find it by its kind
    op_ids = sorted(int(k.split(".")[1]) for k in shapes
                    if k.startswith("input_blocks.") and k.endswith(".0.op.weight"))
    holes = sorted(set(range(max(in_ids) + 1)) - in_ids)  # parameter-free 2×2 average pools
    updown_res = [int(k.split(".")[1]) for k in shapes
                  if k.startswith("output_blocks.") and k.split(".")[2] in ("1", "2") and ".in_layers.0.weight" in k]
    resblock_updown, conv_resample = False, True
    if op_ids:
        nrb = op_ids[0] - 1
    elif holes:
        nrb, conv_resample = holes[0] - 1, False
    elif updown_res:  # ResBlock(up=True) after the decoder's (num_res_blocks+1)-th block of the deepest level
        nrb, resblock_updown = min(updown_res), True
    else:  # a single level: no resampling at all
        nrb = n_out - 1
    if nrb < 0 or n_out % (nrb + 1):
        raise ADMStateDictError(f"cannot read the level structure: {n_out} output blocks, num_res_blocks {nrb}")
    levels = n_out // (nrb + 1)

    # channels and attention per level, read on the decoder (its blocks exist for every level, even nrb = 0)
    mults, attn_ds = [], []
    for level in range(levels):
        j = (levels - 1 - level) * (nrb + 1)
        width = get(f"output_blocks.{j}.0.out_layers.3.weight")[0]
        mults.append(width / C)
        if f"output_blocks.{j}.1.qkv.weight" in shapes:
            attn_ds.append(2**level)
    if any(image_size % ds for ds in attn_ds) or image_size % 2 ** (levels - 1):
        raise ADMStateDictError(f"image_size {image_size} is not divisible by the model's downsampling factors")

    cfg = ADMConfig(
        image_size=image_size, in_channels=in_ch, num_channels=C, num_res_blocks=nrb,
        channel_mult=",".join(_fmt_number(m) for m in mults),
        learn_sigma=out_ch == 2 * in_ch,
        class_cond="label_emb.weight" in shapes,
        num_classes=shapes["label_emb.weight"][0] if "label_emb.weight" in shapes else 1000,
        attention_resolutions=",".join(str(image_size // ds) for ds in attn_ds),
        num_heads=num_heads, num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=scale_shift, dropout=dropout, resblock_updown=resblock_updown,
        conv_resample=conv_resample, use_new_attention_order=use_new_attention_order,
    )
    problems = state_dict_mismatch(expected_shapes(cfg), shapes)
    if problems:
        raise ADMStateDictError("inferred ADM config does not reproduce the state dict: " + "; ".join(problems[:6]))
    return cfg
