"""``restore degrade``: clean images → measurement files (.npz) and previews."""

from __future__ import annotations

import warnings
from pathlib import Path

import operators
from operators import Noise
from operators.seeding import stream_seed

from .io import (Measurement, RestoreError, find_images, load_complex_image, load_image_meta, preview, save_image,
                 save_measurement)
from .outputs import OutputGuard, is_restore_measurement, output_names

SKIPPED = "skipped: made by an earlier run (--overwrite redoes it)"


def preview_path(target: Path) -> Path:
    """The preview PNG written beside a measurement file."""
    return target.with_name(target.stem + "_measurement.png")


def image_seed(base_seed: int, name: str) -> int:
    """The seed of one image: derived from the run's seed and the image's relative path, so adding or removing
    other images never changes it."""
    return stream_seed(base_seed, "image:" + name) % (2**31)


def degrade_one(x, spec: str, noise: Noise, seed: int, source: str = "") -> Measurement:
    """Measure one (C, H, W) image."""
    op = operators.build(spec, tuple(x.shape), seeds=[seed])
    y = operators.measure(op, x[None], noise, [seed])
    state = {k: v for k, v in op.state_dict().items()}
    return Measurement(y=y, spec=str(op.spec), image_shape=tuple(x.shape), noise=noise, seed=seed, state=state,
                       source=source)


def degrade_files(inputs: list[str], spec: str, noise: str, seed: int, out: Path, overwrite: bool = False):
    spec = str(operators.parse(spec))
    noise = Noise.parse(noise)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RestoreError(f"the output '{out}' is a file; give a folder for --out.")
    rows = []
    files = [(p, r) for p, r in find_images(inputs, exclude=out) if p.suffix.lower() != ".npz"]
    guard = OutputGuard([p for p, _ in files])
    plan = []
    for (path, rel), name in zip(files, output_names([r for _, r in files], ".npz")):
        target = out / name
        ours = target.exists() and is_restore_measurement(target)
        guard.check(target, owned=ours)
        guard.check(preview_path(target), owned=ours)
        plan.append((path, rel, target, ours))
    for path, rel, target, ours in plan:
        if ours and not overwrite:
            rows.append(dict(image=path, measurement=target, shape=(), status=SKIPPED))
            continue
        s = image_seed(seed, rel.as_posix())
        image, meta, this_spec = load_complex_image(path), {"format": "npy", "complex": True}, spec
        if image is not None:  # a complex MRI image is measured as it is (complex=true)
            parsed = operators.parse(spec)
            if parsed.family != "mri":
                raise RestoreError(f"'{path}' is a complex image; only the mri operator measures complex images "
                                   f"(e.g. --operator mri-4x).")
            this_spec = str(parsed.replace(complex=True))
        else:
            image, meta = load_image_meta(path)
        with warnings.catch_warnings(record=True) as caught:  # e.g. CT content outside a circle=true operator
            warnings.simplefilter("always")
            m = degrade_one(image, this_spec, noise, s, source=str(path.resolve()))
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        notes += [meta["note"]] if meta.get("note") else []
        m.source_meta = dict(meta, warnings=notes) if notes else meta
        save_measurement(target, m)
        save_image(preview_path(target), preview(m.y[0]))
        rows.append(dict(image=path, measurement=target, shape=tuple(m.y.shape[1:]), status="written", notes=notes))
    return rows
