"""One interface for every diffusion prior.

A prior wraps an ε-prediction network trained on a discrete VP schedule (ADM / DDPM convention) and offers two
views of the same model:

* the **discrete VP view** used by DDPM/DDIM-style solvers (DPS, DDNM, RED-Diff, ReSample): ``alphas_cumprod``
  (ᾱ_t, t = 0 … T−1), ``model_output(x_t, t)`` → (ε̂, v) where v ∈ [-1, 1] is the learned-range variance
  interpolation when the network has those channels (None otherwise), and ``tweedie_vp`` x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t;
* the **σ-space Tweedie denoiser** used by EDM-style solvers (DAPS): ``denoise(x, σ)`` ≈ E[x₀ | x₀ + σ·n = x],
  for x on the [-1, 1] data scale.

They are the same model because x_t = √ᾱ·x₀ + √(1−ᾱ)·ε is x_t/√ᾱ = x₀ + σ·ε with σ = √((1−ᾱ)/ᾱ):
D(x, σ) = x − σ·ε̂(x/√(1+σ²), t(σ)). For a σ between two of the schedule's σ_t, t(σ) is interpolated linearly in
log σ and passed to the network as a fractional timestep (the ADM timestep embedding is continuous).
Latent priors add ``encode``/``decode`` and expose the same views in latent space.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .card import PriorCard, PriorError, sha256_file  # noqa: F401  (re-exported)


def linear_betas(T: int = 1000, start: float = 1e-4, end: float = 0.02) -> Tensor:
    """ADM/DDPM "linear" schedule (β from 1e-4 to 0.02 for T = 1000), in float64."""
    return torch.linspace(start, end, T, dtype=torch.float64)


def ldm_linear_betas(T: int = 1000, start: float = 0.0015, end: float = 0.0195) -> Tensor:
    """Latent-diffusion "linear" schedule: linspace(√start, √end, T)² (not the same as ADM's)."""
    return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2


def cosine_betas(T: int = 1000, s: float = 0.008) -> Tensor:
    """Improved-DDPM cosine schedule (β clipped at 0.999)."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


SCHEDULES = {"linear": linear_betas, "ldm-linear": ldm_linear_betas, "cosine": cosine_betas}


def log_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """log σ_t = ½ log((1−ᾱ_t)/ᾱ_t) for t = 0 … T−1 (float64, increasing): the VP schedule seen in σ space."""
    a = alphas_cumprod.double()
    return 0.5 * torch.log((1 - a) / a)


def t_of_sigma(log_sigma_table: Tensor, sigma: Tensor) -> Tensor:
    """Fractional timestep whose σ_t equals ``sigma`` (linear in log σ between schedule points, clamped to
    [0, T−1])."""
    T = log_sigma_table.numel()
    log_s = torch.as_tensor(sigma, dtype=torch.float64, device=log_sigma_table.device).log()
    log_s = log_s.clamp(log_sigma_table[0], log_sigma_table[-1])
    idx = torch.searchsorted(log_sigma_table, log_s.reshape(-1)).clamp(1, T - 1).reshape(log_s.shape)
    lo, hi = log_sigma_table[idx - 1], log_sigma_table[idx]
    frac = (log_s - lo) / (hi - lo)
    return (idx - 1 + frac).float()


def sigma_of_t(log_sigma_table: Tensor, t: Tensor) -> Tensor:
    """σ at (possibly fractional) timestep t, the inverse of ``t_of_sigma`` (float32)."""
    T = log_sigma_table.numel()
    t = torch.as_tensor(t, dtype=torch.float64, device=log_sigma_table.device).clamp(0, T - 1)
    lo = t.floor().long().clamp(max=T - 2)
    frac = t - lo
    return ((1 - frac) * log_sigma_table[lo] + frac * log_sigma_table[lo + 1]).exp().float()


def tile_spans(n: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], int]:
    """Where tiles start along a side of ``n`` pixels, and their common length: the fewest tiles of at most ``tile``
    (rounded up to ``multiple``) that cover the side with neighbours overlapping by at least ``overlap``, spread
    evenly. A side of at most ``tile`` is one tile."""
    if n <= tile:
        return [0], n
    k = math.ceil((n - overlap) / (tile - overlap))
    length = math.ceil((n + (k - 1) * overlap) / k)
    length = min(n, -(-length // multiple) * multiple)
    return [round(i * (n - length) / (k - 1)) for i in range(k)], length


def _ramp(length: int, start: int, n: int, overlap: int, like: Tensor) -> Tensor:
    """A tile's 1-D blending weight: rising linearly over ``overlap`` pixels at an edge inside the image, flat at
    an edge on the image border."""
    i = torch.arange(length, device=like.device, dtype=like.dtype)
    w = torch.ones(length, device=like.device, dtype=like.dtype)
    if start > 0:
        w = torch.minimum(w, (i + 1) / (overlap + 1))
    if start + length < n:
        w = torch.minimum(w, (length - i) / (overlap + 1))
    return w


def tiled(f: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int, multiple: int = 1) -> Tensor:
    """f applied to overlapping tiles of x (B, C, H, W) and blended: Σ w_k f(x_k) / Σ w_k with ``_ramp`` windows, so
    no seam shows where tiles meet; memory is that of one tile. f may change the channel count, not the size."""
    h, w = x.shape[-2:]
    rows, th = tile_spans(h, tile, overlap, multiple)
    cols, tw = tile_spans(w, tile, overlap, multiple)
    out = weight = None
    for top in rows:
        wy = _ramp(th, top, h, overlap, x)
        for left in cols:
            piece = f(x[..., top:top + th, left:left + tw])
            win = wy[:, None] * _ramp(tw, left, w, overlap, x)[None, :]
            if out is None:
                out = piece.new_zeros((piece.shape[0], piece.shape[1], h, w))
                weight = piece.new_zeros((h, w))
            out[..., top:top + th, left:left + tw] += piece * win
            weight[top:top + th, left:left + tw] += win
    return out / weight


#: the symmetry groups of the pixel grid a network can be averaged over (``DiffusionPrior.symmetries``), each element
#: (k, flip): a left-right flip when ``flip``, then a rotation by k·90°. "flips" suits images with a left-right
#: symmetry but an up (faces, scans); "dihedral" (the 8 symmetries of the square) suits photographs' textures.
SYMMETRIES = {"flips": ((0, False), (0, True)),
              "dihedral": tuple((k, flip) for flip in (False, True) for k in range(4))}


def transform(x: Tensor, g: tuple[int, bool], inverse: bool = False) -> Tensor:
    """g·x for a group element g = (k, flip) of ``SYMMETRIES`` (g⁻¹·x with ``inverse``) on the last two axes."""
    k, flip = g
    if inverse:
        x = torch.rot90(x, -k, (-2, -1)) if k else x
        return x.flip(-1) if flip else x
    x = x.flip(-1) if flip else x
    return torch.rot90(x, k, (-2, -1)) if k else x


def symmetry_index(t: float, n: int) -> int:
    """The group element (of ``n``) used at timestep ``t`` in "one per step" mode: pseudo-random in t (a generator
    seeded by round(1024·t)), so a run is reproducible and independent of the batch and of the order of images."""
    import random

    return random.Random(round(float(t) * 1024)).randrange(n)


class DiffusionPrior(nn.Module):
    """An ε-prediction network ``net(x_t, t)`` on a discrete VP schedule, with both views described above.

    ``net`` returns (B, C, H, W) ε̂, or (B, 2C, H, W) when it also predicts the learned-range variance.
    ``betas`` (T values, optional) overrides ``SCHEDULES[card.schedule]`` for a schedule with other end points
    (e.g. a diffusers scheduler's beta_start/beta_end, or its trained_betas)."""

    def __init__(self, net: nn.Module, card: PriorCard, betas: Tensor | None = None):
        super().__init__()
        self.net = net
        self.card = card
        if betas is None:
            betas = SCHEDULES[card.schedule](card.timesteps)
        else:
            betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
            if betas.numel() != card.timesteps or not bool(((betas > 0) & (betas < 1)).all()):
                got = f" in [{float(betas.min()):.3g}, {float(betas.max()):.3g}]" if betas.numel() else ""
                raise PriorError(f"prior '{card.name}': the schedule needs {card.timesteps} betas in (0, 1), got "
                                 f"{betas.numel()}{got}; check the scheduler config.")
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        #: how the network is evaluated (``restore.acceleration.prepare`` sets these): the largest tile side for big
        #: images (None: whole images) and the tiles' overlap, channels-last memory order, autocast dtype
        self.tile: int | None = None
        self.tile_overlap = 32
        self.channels_last = False
        self.autocast_dtype: torch.dtype | None = None
        #: self-ensembling (``restore.acceleration.prepare`` sets it): None, or a tuple of ``SYMMETRIES`` elements g
        #: over which the network is made equivariant, f(x) = mean_g g⁻¹·net(g·x) ("mean", |G| evaluations), or
        #: g⁻¹·net(g·x) with one g per timestep ("step", one evaluation: the stochastic form of Terris et al.,
        #: "Equivariant plug-and-play image reconstruction", CVPR 2024, averaged over a solver's steps)
        self.symmetries: tuple[tuple[int, bool], ...] | None = None
        self.symmetry_mode = "mean"
        self.evaluations = 0
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        # float64 copy: compute coefficients such as √(1−ᾱ) from it, then cast (as guided-diffusion does in numpy)
        self.register_buffer("alphas_cumprod64", alphas_cumprod, persistent=False)
        # σ_t = √((1−ᾱ_t)/ᾱ_t), increasing in t; kept in float64 for the σ → t interpolation
        self.register_buffer("_log_sigmas", log_sigmas(alphas_cumprod), persistent=False)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this for the network (an ADM UNet with L levels: 2**(L−1)); other sizes
        are reflect-padded to it in ``model_output`` and cropped back, so any-size priors take any image."""
        return int(getattr(getattr(self.net, "cfg", None), "size_multiple", 1) or 1)

    @property
    def T(self) -> int:
        return self.card.timesteps

    @property
    def sigmas(self) -> Tensor:
        """σ_t for t = 0 … T−1 (float32)."""
        return self._log_sigmas.exp().float()

    @property
    def sigma_min(self) -> float:
        return float(self._log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self._log_sigmas[-1].exp())

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """Fractional timestep whose σ_t equals ``sigma`` (linear in log σ between schedule points, clamped to
        [0, T−1])."""
        return t_of_sigma(self._log_sigmas, sigma)

    def sigma_of_t(self, t: Tensor) -> Tensor:
        return sigma_of_t(self._log_sigmas, t)

    # ------------------------------------------------------------------------------------------------------------
    # discrete VP view
    def model_output(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        """(ε̂, v): the network's noise prediction and, when it has them, the variance channels v ∈ [-1, 1].

        An image with a side over ``tile`` (set by ``restore.acceleration.prepare`` for any-size convolutional
        priors) is evaluated in overlapping tiles blended with linear ramps (``tiled``), so memory stays bounded;
        ``evaluations`` counts calls of this method (one per batch, however many tiles or ``symmetries``)."""
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        self.evaluations += 1
        group = self.symmetries
        if not group:
            out = self._evaluate_whole(x_t, t)
        elif self.symmetry_mode == "mean":
            out = sum(transform(self._evaluate_whole(transform(x_t, g), t), g, inverse=True) for g in group)
            out = out / len(group)
        else:  # one group element per image, chosen by its timestep
            pick = [symmetry_index(s, len(group)) for s in t.tolist()]
            out = None
            for i in sorted(set(pick)):
                rows = [b for b, j in enumerate(pick) if j == i]
                g = group[i]
                piece = transform(self._evaluate_whole(transform(x_t[rows], g), t[rows]), g, inverse=True)
                if out is None:
                    out = piece.new_empty((x_t.shape[0], *piece.shape[1:]))
                out[rows] = piece
        c = x_t.shape[1]
        if out.shape[1] == 2 * c:
            return out[:, :c], out[:, c:]
        return out, None

    def _evaluate_whole(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The network on x_t, in overlapping tiles when a side exceeds ``tile``."""
        if self.tile and max(x_t.shape[-2:]) > self.tile:
            return tiled(lambda piece: self._evaluate(piece, t), x_t, self.tile, self.tile_overlap, self.size_multiple)
        return self._evaluate(x_t, t)

    def _evaluate(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The network on x_t: reflect-padded to its size multiple (half on each side) and cropped back, in
        channels-last memory order and under autocast when those are set; float32, contiguous."""
        h, w = x_t.shape[-2:]
        pad_h, pad_w = (-h) % self.size_multiple, (-w) % self.size_multiple
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            x_t = F.pad(x_t, (left, pad_w - left, top, pad_h - top), mode="reflect" if min(h, w) > max(pad_h, pad_w)
                        else "replicate")
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x_t.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            out = self.net(x_t, t)
        out = out[..., top:top + h, left:left + w] if (pad_h or pad_w) else out
        return out.float().contiguous()

    def tweedie_vp(self, x_t: Tensor, t: Tensor, eps: Tensor | None = None) -> Tensor:
        """x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t at (possibly fractional) timestep t."""
        if eps is None:
            eps, _ = self.model_output(x_t, t)
        a = self.alpha_bar(t, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def alpha_bar(self, t: Tensor, like: Tensor) -> Tensor:
        """ᾱ at (possibly fractional) t, shaped to broadcast against ``like``."""
        sigma = self.sigma_of_t(t).to(like.device)
        a = 1.0 / (1.0 + sigma.double() ** 2)
        a = a.float()
        return a.reshape(-1, *([1] * (like.dim() - 1))) if a.dim() else a

    # ------------------------------------------------------------------------------------------------------------
    # σ-space view
    def denoise(self, x: Tensor, sigma: "float | Tensor") -> Tensor:
        """D(x, σ) ≈ E[x₀ | x₀ + σ·n = x] for x on the [-1, 1] data scale; σ a number or one per image."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        s = sigma.reshape(-1, *([1] * (x.dim() - 1)))
        eps, _ = self.model_output(x / (1 + s**2).sqrt(), self.t_of_sigma(sigma))
        return x - s * eps

    # latent priors override these
    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z
