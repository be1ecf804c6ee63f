"""Inpainting: y = m ⊙ x with a 0/1 mask m (1 = observed), one mask per image, shared by the channels.

Mask kinds
* ``box``: a ``size``×``size`` hole. ``position=random`` draws its top-left corner uniformly from
  [margin, H − margin − size) like DPS (margin 16) and DAPS (margin 32); ``position=center`` centres it.
* ``random``: exactly ⌊fraction·H·W⌋ pixels missing, chosen without replacement (DPS/DAPS "random" masks;
  ``fraction`` is the *missing* fraction, 0.7 in DAPS and ReSample, 0.92 in the DPS paper).
* ``freeform``: ``strokes`` random brush strokes (our own seeded generator in the style of the free-form masks of
  DDNM/Palette: random-walk polylines with round joints, width ``width`` pixels or H/16 when 0).
* ``file``: a .npy or image file of the image's height × width with values on [0, 1] (8-bit images 0–255, 16-bit
  0–65535; anything else is refused); > 0.5 = observed.

The operator is diagonal, so its SVD is trivial: V = U = I, singular values m.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import LinearOperator
from .registry import preset, register
from .seeding import numpy_rng
from .spec import OperatorError, Param, fraction, non_negative, positive


def load_array_file(path: str, what: str) -> np.ndarray:
    """Read a 2-D array from .npy or an image file, with a clear error."""
    p = Path(path).expanduser()
    if not path:
        raise OperatorError(f"{what} needs a file: add file=PATH to the operator spec.")
    if not p.is_file():
        raise OperatorError(f"the {what} file '{path}' does not exist; check the path.")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(p) as im:
                arr = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "F") else im)
        if arr.dtype == np.uint8:  # 8-bit images: 0–255
            arr = arr.astype(np.float64) / 255.0
        elif arr.dtype == np.uint16 or (p.suffix.lower() != ".npy" and np.issubdtype(arr.dtype, np.integer)
                                        and arr.size and arr.max() > 255):  # 16-bit images: 0–65535
            arr = arr.astype(np.float64) / 65535.0
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise OperatorError(f"cannot read the {what} file '{path}' ({exc}); give a .npy array or a PNG image.") from None
    arr = np.squeeze(np.asarray(arr, dtype=np.float64))
    if arr.ndim != 2:
        raise OperatorError(f"the {what} file '{path}' holds an array of shape {arr.shape}; it must be 2-D.")
    if not np.isfinite(arr).all():
        raise OperatorError(f"the {what} file '{path}' holds NaN or infinite values; clean it first.")
    return arr


@register
class Mask(LinearOperator):
    family = "mask"
    description = "inpainting: keep the pixels where the mask is 1 (box, random pixels, free-form strokes, file)"
    params = {
        "kind": Param(str, "box", "box, random, freeform or file", choices=("box", "random", "freeform", "file")),
        "size": Param(int, 128, "box side in pixels", check=positive),
        "margin": Param(int, 16, "box: least distance to the border for random positions", check=non_negative),
        "position": Param(str, "random", "box: random or center", choices=("random", "center")),
        "fraction": Param(float, 0.7, "random: fraction of pixels missing", check=fraction),
        "strokes": Param(int, 6, "freeform: number of strokes", check=positive),
        "width": Param(int, 0, "freeform: stroke width in pixels (0 = height/16)", check=non_negative),
        "file": Param(str, "", "file: path of a .npy or PNG mask (1 = observed)"),
    }
    per_image = ("mask",)
    has_svd = True

    def __init__(self, spec, image_shape, gens):
        super().__init__(spec, image_shape)
        _, h, w = self.image_shape
        kind = spec["kind"]
        if kind == "file":
            arr = load_array_file(spec["file"], "mask")
            if arr.size and (arr.min() < 0 or arr.max() > 1):
                raise OperatorError(f"the mask file '{spec['file']}' holds values from {arr.min():g} to {arr.max():g}, "
                                    f"but a mask holds 0 (missing) and 1 (observed), or 0 and 255 in an 8-bit image; "
                                    f"rescale it.")
            if arr.shape != (h, w):
                raise OperatorError(f"the mask file '{spec['file']}' is {arr.shape[0]}×{arr.shape[1]} but the image is "
                                    f"{h}×{w}; give a mask of the image's size.")
            masks = [torch.from_numpy((arr > 0.5).astype(np.float32))]
        else:
            masks = [self._draw(kind, h, w, g) for g in gens]
        self.register_buffer("mask", torch.stack(masks)[:, None])

    def _draw(self, kind: str, h: int, w: int, g: torch.Generator) -> Tensor:
        spec = self.spec
        m = torch.ones(h, w)
        if kind == "box":
            size, margin = spec["size"], spec["margin"]
            if spec["position"] == "center":
                if size > min(h, w):
                    raise OperatorError(f"a {size}-pixel box does not fit in a {h}×{w} image; use a smaller size.")
                top, left = (h - size) // 2, (w - size) // 2
            else:
                if h - margin - size <= margin or w - margin - size <= margin:
                    raise OperatorError(
                        f"a {size}-pixel box with margin {margin} does not fit in a {h}×{w} image; use a smaller "
                        f"size or margin, or position=center.")
                top = int(torch.randint(margin, h - margin - size, (1,), generator=g))
                left = int(torch.randint(margin, w - margin - size, (1,), generator=g))
            m[top:top + size, left:left + size] = 0
        elif kind == "random":
            n_missing = int(math.floor(spec["fraction"] * h * w))
            m.view(-1)[torch.randperm(h * w, generator=g)[:n_missing]] = 0
        else:
            m = torch.from_numpy(freeform_mask(h, w, spec["strokes"], spec["width"] or max(2, h // 16), numpy_rng(g)))
        return m

    # y = m ⊙ x ; Aᴴ = A ; A⁺ = A (m is a 0/1 projection)
    def A(self, x: Tensor) -> Tensor:
        return x * self.mask

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y * self.mask

    def A_pinv(self, y: Tensor) -> Tensor:
        return y * self.mask

    def noise_mask(self) -> Tensor:
        return self.mask

    def Vt(self, x):
        return x

    def V(self, c):
        return c

    def Ut(self, y):
        return y * self.mask

    def U(self, c):
        return c * self.mask

    def singulars(self):
        return self.mask.expand(-1, self.image_shape[0], -1, -1)


def freeform_mask(h: int, w: int, strokes: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Free-form brush strokes: each a random walk of 4–10 segments with round joints. Returns 1 = observed."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    scale = min(h, w)
    for _ in range(strokes):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * np.pi)
        stroke_w = max(1, int(round(width * rng.uniform(0.6, 1.4))))
        points = [(x, y)]
        for _ in range(int(rng.integers(4, 11))):
            angle += rng.uniform(-np.pi / 3, np.pi / 3)
            length = rng.uniform(0.05, 0.2) * scale
            x = float(np.clip(x + length * np.cos(angle), 0, w - 1))
            y = float(np.clip(y + length * np.sin(angle), 0, h - 1))
            points.append((x, y))
        draw.line(points, fill=255, width=stroke_w)
        r = stroke_w / 2
        for px, py in points:
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    return (np.asarray(canvas) < 128).astype(np.float32)


preset("inpaint-box", "mask:kind=box,size=128,margin=16", "DPS box inpainting: 128×128 hole at a random position "
       "(margin 16) in a 256×256 image")
preset("inpaint-box-daps", "mask:kind=box,size=128,margin=32", "DAPS box inpainting: 128×128 hole, margin 32")
preset("inpaint-box-center", "mask:kind=box,size=128,position=center", "128×128 centred hole")
preset("inpaint-random", "mask:kind=random,fraction=0.7", "random inpainting, 70% of pixels missing (DAPS, ReSample)")
preset("inpaint-random92", "mask:kind=random,fraction=0.92", "random inpainting, 92% missing (DPS paper)")
preset("inpaint-freeform", "mask:kind=freeform", "free-form brush-stroke inpainting")
