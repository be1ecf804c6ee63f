"""Regenerate the shipped sample images from scikit-image's bundled data (all CC0 / public domain).

Run from the repository root: python sample_data/make_samples.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data, transform

HERE = Path(__file__).resolve().parent


def save(name: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(HERE / name, optimize=True)
    print("wrote", HERE / name, array.shape, array.dtype)


def resize(img: np.ndarray, shape) -> np.ndarray:
    out = transform.resize(img, shape, anti_aliasing=True, preserve_range=True, order=3)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


astronaut = data.astronaut()                      # 512×512 RGB, NASA, public domain
save("astronaut.png", resize(astronaut, (256, 256, 3)))
save("astronaut_face64.png", resize(astronaut[20:220, 140:340], (64, 64, 3)))  # face crop, like aligned faces
save("coffee.png", resize(data.coffee()[8:392, 12:588], (192, 288, 3)))          # CC0, Rachel Michetti
save("camera.png", resize(data.camera(), (256, 256)))                            # CC0, Lav Varshney
phantom = transform.resize(data.shepp_logan_phantom(), (128, 128), anti_aliasing=True)  # generated phantom
save("shepp_logan128.png", np.clip(np.round(phantom * 65535), 0, 65535).astype(np.uint16))


# Synthetic slices for the MRI and CT demos: no brain MRI or chest CT that the project may ship exists in
# scikit-image, so these are unconditional samples of the project's own embedded priors (brain-mri, ct), generated
# here, not patients. Restoring a prior's own sample flatters that prior; the benchmarks use real held-out slices.
SYNTHETIC = {"brain_synthetic128.png": ("brain-mri", 3), "ct_synthetic128.png": ("ct", 1)}  # file: (prior, seed)


def synthetic_slices(steps: int = 250) -> None:
    import sys

    import torch

    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    import priors
    from priors_eval import sample_grid

    for name, (prior_name, seed) in SYNTHETIC.items():
        try:
            prior = priors.resolve(prior_name).eval()
        except Exception as exc:  # a checkout without that prior keeps the file it has
            print(f"skipped {name}: {exc}")
            continue
        torch.manual_seed(0)
        x = sample_grid(prior, 1, prior.card.image_size, steps, seed=seed)[0, 0]
        save(name, np.clip(np.round(x.numpy() * 65535), 0, 65535).astype(np.uint16))


synthetic_slices()
