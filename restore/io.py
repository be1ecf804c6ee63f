"""Image and measurement files.

Images are read into float32 ``(C, H, W)`` tensors on [0, 1]: PNG/JPEG (EXIF orientation honoured, alpha dropped),
8/16-bit and float TIFF, NPY arrays (H×W, H×W×C or C×H×W; floats taken as they are), and DICOM slices (``.dcm``, or
any file with the DICOM preamble: HU window → [0, 1], see :mod:`restore.dicom`; ``load_image_meta`` also returns how
the values were mapped, for a sidecar). Outputs are written to a temporary name in the same folder and renamed, so an
interrupted run never leaves a file that looks complete; ``atomic_group`` does the same for an image and its sidecar
together.

A measurement file (``.npz``, written by ``restore degrade``) holds the measurement, the operator spec, the image
shape, the noise, the seed and the operator's drawn parameters (masks, kernels, coil maps), enough to rebuild the
exact operator: ``load_measurement`` returns them.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import operators
from operators import Noise, OperatorError

from .errors import RestoreError  # re-exported: ``from restore.io import RestoreError``
from .outputs import MEASUREMENT_FORMAT, carries_sidecar, inside  # MEASUREMENT_FORMAT re-exported

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".npy", ".dcm", ".dicom"}
_DICOM_SUFFIXES = {".dcm", ".dicom"}  # also any file with the DICOM preamble, whatever its suffix
#: a float image may stray this far outside [0, 1] (a noisy measurement does); further is a wrong scale, refused
FLOAT_SLACK = 0.5


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    with atomic_group([path]) as (tmp,):
        yield tmp


@contextmanager
def atomic_group(paths: "list[str | Path]"):
    """Yield temporary paths beside ``paths``; once the block has written them all, rename each to its path.

    Any failure while writing (a full disk, Ctrl-C) removes the temporaries and leaves every existing file as it
    was. The last path is the group's completion marker (a sidecar): an old one is removed just before the renames
    and the new one is renamed last, so a group whose marker exists is complete and consistent."""
    paths = [Path(p) for p in paths]
    tmps: list[str] = []
    where = paths[0]  # what a failure is reported against
    try:
        for path in paths:
            where = path
            tmps.append(_temporary_beside(path))
        where = paths[0]
        yield [Path(t) for t in tmps]
        if len(paths) > 1:
            _remove_marker(paths[-1])
        for i, (tmp, path) in enumerate(zip(tmps, paths)):
            where = path
            os.replace(tmp, path)
            tmps[i] = ""
    except OSError as exc:
        for tmp in tmps:
            _unlink(tmp)
        raise _write_error(where, exc) from None
    except BaseException:
        for tmp in tmps:
            _unlink(tmp)
        raise


def _temporary_beside(path: Path) -> str:
    if path.exists() and path.is_dir():
        raise RestoreError(f"cannot write '{path}': it is a folder; choose another output name.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RestoreError(f"cannot create the folder '{path.parent}': a file of that name exists; "
                           f"choose another --out.") from None
    except PermissionError:
        raise RestoreError(f"no permission to create '{path.parent}'; choose a writable --out.") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    return tmp


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _remove_marker(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_error(path: Path, exc: OSError) -> RestoreError:
    """One sentence for a failed write, with the fix that fits its cause."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        fix = "free some space or choose an --out on another disk"
    elif isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or choose a writable --out"
    else:
        fix = "free some space or choose a writable --out"
    return RestoreError(f"cannot write '{path}' ({reason}); {fix}.")


def _unlink(p) -> None:
    if not p:
        return
    try:
        os.unlink(p)
    except OSError:
        pass


def load_image(path: "str | Path", hu_window=None) -> torch.Tensor:
    """Read an image file as a float32 (C, H, W) tensor on [0, 1] (C = 1 or 3).

    ``hu_window`` ((lo, hi) in HU, or "LO,HI") applies to DICOM files only; see :mod:`restore.dicom`."""
    return load_image_meta(path, hu_window=hu_window)[0]


def load_image_meta(path: "str | Path", hu_window=None) -> tuple[torch.Tensor, dict]:
    """``load_image`` plus a small dict saying how the file's values were mapped to [0, 1]: ``{"format": ...}``, and
    for DICOM the HU window, rescale slope/intercept, photometric interpretation (see ``restore.dicom.read_dicom``),
    for a sidecar to record."""
    path = Path(path)
    if not path.exists():
        raise RestoreError(f"the file '{path}' does not exist; check the path.")
    if path.is_dir():
        raise RestoreError(f"'{path}' is a folder; give an image file or use a folder input where supported.")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES - _DICOM_SUFFIXES:
        from .dicom import is_dicom, read_dicom

        if is_dicom(path):
            arr, meta = read_dicom(path, hu_window=hu_window)
            return to_tensor(arr, str(path)), meta
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if np.iscomplexobj(arr):  # a complex (MRI) image: its magnitude, the image a real prior restores
                check_complex_image(arr, str(path))
                return to_tensor(np.abs(arr).astype(np.float32), str(path)), {
                    "format": "npy", "note": "complex image: its magnitude |x| is the image compared with"}
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr, notes = pil_to_array(im)
    except RestoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means an unreadable file for the user
        raise RestoreError(f"cannot read '{path}' as an image ({type(exc).__name__}: {exc}); give a PNG, JPEG, "
                           f"TIFF, NPY or DICOM file.") from None
    meta = {"format": suffix.lstrip(".") or "image"}
    if suffix != ".npy" and suffix not in (".tif", ".tiff"):
        meta.update(notes)
    return to_tensor(arr, str(path)), meta


def pil_to_array(im) -> tuple[np.ndarray, dict]:
    """A PIL image → an H×W or H×W×3 array whose dtype says its range (uint8 0–255, uint16 0–65535, float32 on
    [0, 1]), and a dict of what was done: every mode is converted by its meaning, not by its bands' count —
    CMYK and YCbCr (and LAB, HSV) to RGB, palettes to RGB, 1-bit to grey, alpha dropped, 16-bit kept at 16 bits;
    an animated image gives its first frame (said in the dict); EXIF orientation is honoured."""
    from PIL import ImageOps

    notes: dict = {"mode": im.mode}
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        im.seek(0)
        notes["note"] = f"animated image: the first of its {frames} frames was used"
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im).astype(np.uint16)
    elif mode == "I":  # 32-bit integers: 16-bit data (PNG 16-bit grey often opens as I)
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise RestoreError(f"this 32-bit integer image holds values from {arr.min()} to {arr.max()}; save it as "
                               f"8- or 16-bit, or as a float array on [0, 1] (.npy).")
        arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
    elif mode in ("L", "RGB"):
        arr = np.asarray(im)
    elif mode in ("1", "LA", "La"):
        arr = np.asarray(im.convert("L"))
    else:  # P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV: through PIL's own conversion to RGB
        arr = np.asarray(im.convert("RGBA").convert("RGB") if mode in ("P", "PA") else im.convert("RGB"))
    if mode not in ("L", "RGB", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        notes["converted"] = f"{mode} → {'grey' if arr.ndim == 2 else 'RGB'}"
    return arr, notes


def check_complex_image(arr: np.ndarray, name: str) -> None:
    """A complex image's magnitude must be on [0, 1] (as real images are), within the float slack."""
    if not np.isfinite(arr).all():
        raise RestoreError(f"'{name}' contains NaN or infinite values; clean the data first.")
    top = float(np.abs(arr).max()) if arr.size else 0.0
    if top > 1 + FLOAT_SLACK:
        raise RestoreError(f"'{name}' is a complex image with magnitudes up to {top:g}, but images are read on "
                           f"[0, 1]; divide it by its largest magnitude and save it again.")


def load_complex_image(path: "str | Path") -> "torch.Tensor | None":
    """A complex .npy image as a (C, H, W) complex64 tensor (magnitudes on [0, 1]); None for any other file."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return None
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception:  # noqa: BLE001 - load_image_meta says what is wrong with it
        return None
    if not np.iscomplexobj(arr):
        return None
    arr = np.array(arr)  # a writable copy
    check_complex_image(arr, str(path))
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or arr.shape[0] > 4:
        raise RestoreError(f"'{path}' is a complex array of shape {arr.shape}; a complex image must be H×W or "
                           f"(channels, H, W).")
    return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.complex64)


def to_tensor(arr: np.ndarray, name: str = "array") -> torch.Tensor:
    """uint8/uint16/float array (H×W, H×W×C or C×H×W) → float32 (C, H, W) on [0, 1]; alpha is dropped."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise RestoreError(f"'{name}' has shape {arr.shape}; an image must be H×W, H×W×C or C×H×W with 1, 3 or 4 "
                           f"channels.")
    if arr.shape[-1] in (2, 4):  # grey+alpha or RGBA: drop alpha
        arr = arr[..., :-1]
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = (arr.astype(np.float64) - min(info.min, 0)) / (info.max - min(info.min, 0))
    else:
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise RestoreError(f"'{name}' contains NaN or infinite values; clean the data first.")
        lo, hi = (float(out.min()), float(out.max())) if out.size else (0.0, 0.0)
        if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
            raise RestoreError(f"'{name}' holds values from {lo:g} to {hi:g}, but float images are read on [0, 1]; "
                               f"divide it by its full scale (e.g. 255 or {hi:g}) and save it again.")
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(out, -1, 0))).float()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) on [0, 1] → H×W or H×W×3 uint8."""
    arr = img.detach().float().clamp(0, 1).cpu().numpy()
    arr = np.round(arr * 255.0).astype(np.uint8)
    return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)


def save_image(path: "str | Path", img: torch.Tensor, atomic: bool = True) -> Path:
    """Write a (C, H, W) image on [0, 1]: .png/.jpg as 8-bit, .tif as float32, .npy as the float array.

    ``atomic=False`` writes straight to ``path`` (for a temporary path from ``atomic_group``)."""
    path = Path(path)
    if not atomic:
        _write_image(path, img, path.suffix.lower())
        return path
    with atomic_path(path) as tmp:
        _write_image(tmp, img, path.suffix.lower())
    return path


def _write_image(target: Path, img: torch.Tensor, suffix: str) -> None:
    if suffix == ".npy":
        with open(target, "wb") as f:
            np.save(f, img.detach().float().cpu().numpy())
    elif suffix in (".tif", ".tiff"):
        import tifffile

        arr = img.detach().float().cpu().numpy()
        tifffile.imwrite(target, arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1))
    else:
        from PIL import Image

        Image.fromarray(to_uint8(img)).save(target, format="PNG" if suffix == ".png" else None)


def write_json(path: "str | Path", obj, atomic: bool = True) -> Path:
    path = Path(path)
    text = json.dumps(obj, indent=2, default=str) + "\n"
    if not atomic:
        path.write_text(text)
        return path
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------------------------
# measurements


@dataclass
class Measurement:
    y: torch.Tensor                      # (1, *measurement_shape)
    spec: str
    image_shape: tuple[int, int, int]
    noise: Noise
    seed: int
    state: dict = field(default_factory=dict)  # operator buffers
    source: str = ""                     # the clean image it was made from, if known
    source_meta: dict = field(default_factory=dict)  # how that image's values were mapped to [0, 1] (DICOM window)

    def operator(self, device="cpu") -> "operators.Operator":
        op = operators.build(self.spec, self.image_shape, seeds=[self.seed], device=device, state=self.state)
        op.check_measurement(self.y)
        return op


def save_measurement(path: "str | Path", m: Measurement) -> Path:
    y = m.y.detach().cpu()
    arrays = {"measurement": y.numpy()}
    for name, value in m.state.items():
        arrays[f"state.{name}"] = value.detach().cpu().numpy()
    meta = {"format": MEASUREMENT_FORMAT, "spec": m.spec, "image_shape": list(m.image_shape),
            "noise": str(m.noise), "seed": m.seed, "source": m.source, "source_meta": m.source_meta,
            "restore_version": _version()}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def load_measurement(path: "str | Path") -> Measurement:
    path = Path(path)
    if not path.is_file():
        raise RestoreError(f"the measurement file '{path}' does not exist; make one with 'restore degrade'.")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            y = torch.from_numpy(z["measurement"].copy())
            state = {k[len("state."):]: torch.from_numpy(z[k].copy()) for k in z.files if k.startswith("state.")}
    except Exception:  # noqa: BLE001
        raise RestoreError(f"'{path}' is not a measurement file written by 'restore degrade'; make one with "
                           f"'restore degrade IMAGE --operator SPEC'.") from None
    if not bool(torch.isfinite(y).all()):
        raise RestoreError(f"'{path}' holds NaN or infinite values in its measurement; re-create it with "
                           f"'restore degrade'.")
    if meta.get("format") != MEASUREMENT_FORMAT:
        raise RestoreError(f"'{path}' has format '{meta.get('format')}', not {MEASUREMENT_FORMAT}; re-create it "
                           f"with this version's 'restore degrade'.")
    m = Measurement(y=y, spec=meta["spec"], image_shape=tuple(meta["image_shape"]), noise=Noise.parse(meta["noise"]),
                    seed=int(meta["seed"]), state=state, source=meta.get("source", ""),
                    source_meta=meta.get("source_meta", {}))
    try:
        m.operator()
    except OperatorError as exc:
        raise RestoreError(f"'{path}' does not match its own operator: {exc}") from None
    return m


def preview(y: torch.Tensor) -> torch.Tensor:
    """A viewable (C, H, W) image on [0, 1] of one measurement: images as they are, complex data (k-space) as
    log-magnitude, other arrays (sinograms, |FFT|) rescaled to their range."""
    y = y.detach().cpu()
    if y.is_complex():
        mag = torch.log1p(y.abs() * 100.0)
        y = mag.reshape(-1, *mag.shape[-2:])[:1]  # first channel/coil
        return y / y.max().clamp_min(1e-12)
    y = y.float()
    if y.dim() == 3 and y.shape[0] in (1, 3) and float(y.min()) >= -0.5 and float(y.max()) <= 1.5:
        return y.clamp(0, 1)
    y = y.reshape(-1, *y.shape[-2:])[:1]
    lo, hi = y.min(), y.max()
    return (y - lo) / (hi - lo).clamp_min(1e-12)


def find_images(inputs: list[str], exclude: "Path | None" = None) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursively) into (path, path relative to its input root) pairs.

    In a folder: files with an image, NPY, NPZ or DICOM suffix, and files without a suffix that start with the DICOM
    preamble; hidden files (``.name``: temporary ``.part`` files, macOS ``._name`` resource forks) are left out, and
    so is what restore wrote: the folder ``exclude`` (the run's --out) when it lies inside an input folder, restored
    images that carry a restore sidecar, and the previews beside measurement files."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            skip_out = exclude is not None and inside(exclude, p)
            files = sorted(f for f in p.rglob("*") if _is_input_file(f, p)
                           and not (skip_out and inside(f, exclude)) and not carries_sidecar(f)
                           and not _is_preview(f))
            if not files:
                raise RestoreError(f"the folder '{p}' holds no images (PNG, JPEG, TIFF, NPY, NPZ or DICOM); check "
                                   f"the path.")
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise RestoreError(f"the input '{p}' does not exist; check the path.")
    return found


def _is_preview(f: Path) -> bool:
    """The preview PNG that 'restore degrade' writes beside each measurement file."""
    return f.stem.endswith("_measurement") and f.with_name(f.stem[:-len("_measurement")] + ".npz").is_file()


def _is_input_file(f: Path, root: Path) -> bool:
    if any(part.startswith(".") for part in f.relative_to(root).parts) or not f.is_file():
        return False
    suffix = f.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix == ".npz":
        return True
    if suffix == "":
        from .dicom import has_dicom_preamble

        return has_dicom_preamble(f)
    return False


def _version() -> str:
    from . import __version__

    return __version__
