"""Latent diffusion priors: an autoencoder plus an ε-network on its latents (LDM / ReSample style).

``LatentPrior`` is a ``DiffusionPrior`` whose views (``denoise``, ``model_output``, ``tweedie_vp``, ``alphas_cumprod``)
act on latents ``z``; ``encode`` (image on [-1, 1] → z) and ``decode`` (z → image on [-1, 1]) go through the
autoencoder. Latents are scaled as in LDM: ``z = (E(x) − shift)·scale_factor`` so that they have about unit variance.

Our own small prior for 64×64 faces (``faces64-latent``) is built in two trainings, both resumable like
``priors.train``:

1. ``train_autoencoder`` (``priors.latent_train``) — ``SmallAutoencoder``: convolutional encoder/decoder, ×4 downsampling (64×64×3 → 16×16×c),
   **KL-regularised** with a tiny KL weight (1e-6, as LDM's KL autoencoders). KL rather than VQ because it is the
   simpler one to train well in a short run: no codebook to learn (no dead codes, no commitment loss, no
   straight-through estimator), its decoder is smooth in z (what ReSample's latent optimisation and DAPS need), and
   with so small a KL weight the posterior is nearly deterministic, so encoding with the posterior mean loses
   nothing. It writes ``OUT/NAME.safetensors`` + ``OUT/NAME.json`` with the reconstruction PSNR on held-out images
   and the scale factor (1/std of the training latents, LDM's ``scale_by_std``).
2. ``train_latent_prior`` (``priors.latent_train``) — encodes the training images once (with their mirror images) and trains an ADM UNet on
   the latents with ``priors.train.fit`` on the LDM "ldm-linear" schedule; it writes one ``OUT/NAME.safetensors``
   holding both networks (keys ``net.*`` and ``autoencoder.*``) and the model card ``OUT/NAME.json`` (latent=True).

``priors.load.load_prior_file`` / ``priors.resolve`` load such a file (``priors.load.latent_prior_from_state`` when
the card says latent); ``priors.load.load_latent_prior`` is the direct entry point.
"""


from __future__ import annotations

from torch import Tensor, nn

from .autoencoder import AutoencoderConfig, SmallAutoencoder, load_autoencoder  # noqa: F401  (re-exported)
from .base import DiffusionPrior, PriorCard, PriorError

__all__ = ["AutoencoderConfig", "LatentPrior", "SmallAutoencoder", "load_autoencoder"]


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
