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
# scikit-image, so these are unconditional samples of the project's own embedded priors (brain-mri, ct), not patients:
# one tile of each prior's sample grid in docs/priors/ (written by benchmarks/priors_eval.py: 9 samples, seed 0,
# 100 DDPM steps; the tile chosen by eye as the most anatomy-like). Restoring a prior's own sample flatters that
# prior; the benchmarks use real held-out slices.
SYNTHETIC = {"brain_synthetic128.png": ("brain-mri_samples.png", 0), "ct_synthetic128.png": ("ct_samples.png", 5)}


def synthetic_slices(size: int = 128, cols: int = 3) -> None:
    docs = HERE.parent / "docs" / "priors"
    for name, (grid_name, index) in SYNTHETIC.items():
        if not (docs / grid_name).is_file():
            print(f"skipped {name}: {docs / grid_name} is missing (run benchmarks/priors_eval.py --samples)")
            continue
        grid = np.asarray(Image.open(docs / grid_name).convert("L"))
        r, c = divmod(index, cols)
        save(name, np.ascontiguousarray(grid[r * size:(r + 1) * size, c * size:(c + 1) * size]))


synthetic_slices()
