"""Images whose size or scale the prior was not trained for: ``--fit pad|crop|resize``, and the scale warning.

A fixed-size prior (``faces64``: 64×64) cannot restore a 500×480 photo; without ``--fit`` the image is refused with
the options. With ``--fit`` the *measurement* of a plain image is fitted to the prior's size, solved there, and the
estimate mapped back:

* ``pad``: reflect-pad the measurement (centred) up to the prior's size; the estimate is cropped back. For images
  smaller than the prior.
* ``crop``: the centred crop of the prior's size is restored; the output is that crop (the reference, if any, is
  cropped alike). For images larger than the prior.
* ``resize``: the measurement is resized (bicubic, antialiased) to the prior's size, restored, and the estimate
  resized back. Downsizing averages the noise: σ is scaled by the size ratio (exact for area averaging, close for
  bicubic). Not for blur (resizing changes the kernel's scale) or masks (it would smear the holes).

Only plain-image inputs of operators whose measurement is an image (denoise, blur, sr, generated masks) can be
fitted; the sidecar records what was done.

Convolutional priors trained on crops of images at one scale (``ct``, ``brain-mri``: 128×128 slices) take any size,
but an image at another scale (a 512×512 DICOM slice) is one they never saw: ``scale_warning`` says so (terminal and
sidecar), and ``--fit resize`` restores it at the trained scale.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

import operators
from operators import Noise

from .errors import RestoreError

FIT_MODES = ("pad", "crop", "resize")
#: families whose measurement is an image on the image's grid (sr: on a grid `factor` times coarser)
FITTABLE = {"denoise": FIT_MODES, "sr": FIT_MODES, "blur": ("pad", "crop"), "mask": ("pad", "crop")}
#: a convolutional prior is trusted from this fraction of its training scale to its inverse
SCALE_TOLERANCE = 1.5


@dataclasses.dataclass
class Fit:
    mode: str
    image_shape: tuple            # the original image shape (C, H, W)
    fitted_shape: tuple           # the shape that was solved
    box: tuple                    # (top, left, height, width) of the original in the fitted image (pad) or the crop

    def note(self) -> str:
        (_, h, w), (_, fh, fw) = self.image_shape, self.fitted_shape
        if self.mode == "pad":
            return f"reflect-padded from {h}×{w} to {fh}×{fw} for the prior and cropped back"
        if self.mode == "crop":
            return f"only the centred {fh}×{fw} crop of the {h}×{w} image was restored (--fit crop)"
        return f"resized from {h}×{w} to {fh}×{fw} for the prior, restored, and resized back"

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), note=self.note())


def native_size(card) -> "int | None":
    """The image side a prior was trained at: a fixed-size prior's size, or for a convolutional crop-trained prior
    the whole-image size its crops were taken from (``ct``, ``brain-mri``: 128); None when whole images of any size
    are at the training scale (``natural``: crops of photographs at their own scale)."""
    size = card.image_size
    if not size:
        return None
    if not card.extra.get("any_size"):
        return int(size)
    train = card.extra.get("train_size")
    return int(size) if train and int(train) != int(size) else None


def fixed_size(card) -> "int | None":
    return int(card.image_size) if card.image_size and not card.extra.get("any_size") else None


def scale_warning(card, image_shape) -> "str | None":
    """One sentence when an any-size prior meets an image far from its training scale."""
    n = native_size(card)
    if n is None or fixed_size(card):
        return None
    side = max(image_shape[-2:])
    if 1 / SCALE_TOLERANCE <= side / n <= SCALE_TOLERANCE:
        return None
    return (f"prior '{card.name}' was trained on {n}×{n} images but this one is {image_shape[-2]}×{image_shape[-1]}, "
            f"a scale it never saw, so the result may be wrong; --fit resize restores it at {n}×{n}.")


def other_priors_hint(channels: int) -> str:
    return ("natural (photographs of any size)" if channels == 3 else "brain-mri or ct (grey, any size)")


def plan(card, spec: str, image_shape, mode: "str | None", plain: bool) -> "Fit | None":
    """The fit for one image (None when it fits as it is), or a refusal naming the options."""
    if card is None or card.name == "none":
        return None
    fixed, native = fixed_size(card), native_size(card)
    _, h, w = image_shape
    if mode is None:
        if fixed and (h, w) != (fixed, fixed) and not card.latent:
            raise RestoreError(f"prior '{card.name}' restores {fixed}×{fixed} images but this one is {h}×{w}; give "
                               f"--fit pad, crop or resize, resize or crop the input to {fixed}×{fixed}, or use "
                               f"{other_priors_hint(card.channels)}.")
        if fixed and (h, w) != (fixed, fixed):
            raise RestoreError(f"prior '{card.name}' restores {fixed}×{fixed} images but this one is {h}×{w}; resize "
                               f"or crop the input to {fixed}×{fixed}, or give --fit pad, crop or resize.")
        return None
    target = fixed or native
    if mode not in FIT_MODES:
        raise RestoreError(f"--fit must be pad, crop or resize, got '{mode}'.")
    if target is None:
        raise RestoreError(f"prior '{card.name}' takes images of any size at their own scale, so there is nothing "
                           f"to fit; drop --fit.")
    parsed = operators.parse(spec)
    if not plain:
        raise RestoreError("--fit works on plain images given with --operator; a measurement file is solved at the "
                           "size it was made for (degrade a fitted image instead).")
    allowed = FITTABLE.get(parsed.family, ())
    if parsed.family == "mask" and parsed["kind"] == "file":
        allowed = ()
    if mode not in allowed:
        why = ("resizing would change the blur kernel's scale" if parsed.family == "blur" else
               "resizing would smear the holes" if parsed.family == "mask" else
               "its measurement is not an image on the image's grid")
        options = f"use --fit {' or '.join(allowed)}" if allowed else "resize or crop the image before measuring it"
        raise RestoreError(f"--fit {mode} does not work with operator '{parsed.family}' ({why}); {options}.")
    if not fixed:  # an any-size prior with a training scale: only resizing changes anything
        if mode != "resize":
            raise RestoreError(f"prior '{card.name}' takes images of any size; --fit resize brings this one to its "
                               f"training scale ({target}×{target}), pad and crop do nothing for it.")
        f = factor(spec)
        scale = target / max(h, w)
        fh, fw = (max(f, round(h * scale / f) * f), max(f, round(w * scale / f) * f))
        return None if (fh, fw) == (h, w) else Fit(mode, tuple(image_shape), (image_shape[0], fh, fw), (0, 0, h, w))
    if (h, w) == (target, target):
        return None
    if mode == "pad" and (h > target or w > target):
        raise RestoreError(f"--fit pad makes images larger, but this one is {h}×{w} and prior '{card.name}' takes "
                           f"{target}×{target}; use --fit crop or resize.")
    if mode == "crop" and (h < target or w < target):
        raise RestoreError(f"--fit crop needs an image of at least {target}×{target}, but this one is {h}×{w}; use "
                           f"--fit pad or resize.")
    f = factor(spec)  # the measurement grid is f times coarser: the box starts on it
    top, left = (0, 0) if mode == "resize" else (abs(target - h) // 2 // f * f, abs(target - w) // 2 // f * f)
    return Fit(mode, tuple(image_shape), (image_shape[0], target, target),
               (top, left, min(h, target), min(w, target)))


def factor(spec: str) -> int:
    parsed = operators.parse(spec)
    return int(parsed["factor"]) if parsed.family == "sr" else 1


def fit_measurement(y: torch.Tensor, fit: Fit, spec: str, noise: Noise) -> tuple[torch.Tensor, Noise]:
    """The measurement (1, C, h, w) on the fitted grid, and the noise model there."""
    f = factor(spec)
    _, th, tw = fit.fitted_shape
    th, tw = th // f, tw // f
    h, w = y.shape[-2:]
    if fit.mode == "resize":
        resized = F.interpolate(y, size=(th, tw), mode="bicubic", align_corners=False, antialias=True)
        ratio = min(1.0, (th * tw / (h * w)) ** 0.5)  # downsizing averages the noise
        if noise.kind == "gaussian" and ratio < 1:
            noise = Noise("gaussian", sigma=noise.sigma * ratio)
        return resized, noise
    top, left = fit.box[0] // f, fit.box[1] // f
    if fit.mode == "crop":
        return y[..., top:top + th, left:left + tw], noise
    pad_h, pad_w = th - h, tw - w
    mode = "reflect" if min(h, w) > max(pad_h - top, pad_w - left, top, left) else "replicate"
    return F.pad(y, (left, pad_w - left, top, pad_h - top), mode=mode), noise


def unfit(x: torch.Tensor, fit: Fit) -> torch.Tensor:
    """The estimate (C, H', W') on the fitted grid → the output: cropped back (pad), as it is (crop), or resized back
    to the original size (resize)."""
    _, h, w = fit.image_shape
    if fit.mode == "pad":
        top, left = fit.box[0], fit.box[1]
        return x[..., top:top + h, left:left + w]
    if fit.mode == "resize":
        return F.interpolate(x[None], size=(h, w), mode="bicubic", align_corners=False,
                             antialias=True)[0].clamp(0, 1)
    return x


def fit_reference(ref: "torch.Tensor | None", fit: Fit) -> "torch.Tensor | None":
    """The reference the output is compared with: the same crop for --fit crop."""
    if ref is None or fit.mode != "crop":
        return ref
    top, left, hh, ww = fit.box
    return ref[..., top:top + hh, left:left + ww]
