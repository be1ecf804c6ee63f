"""DICOM input: single-slice CT (and other monochrome) images → [0, 1] with a documented HU window.

A DICOM file is recognised by its suffix (``.dcm``, ``.dicom``) or, whatever its name, by the ``DICM`` magic at byte
128 of the file (the DICOM preamble). It is read with pydicom (``pip install 'restore[dicom]'``), imported only when
a DICOM file is met.

Value mapping (the ``value_map`` recorded in :func:`read_dicom`'s metadata):

* **CT** (``Modality`` CT, or a ``RescaleType`` of HU, or whenever a window is given explicitly): the stored values
  are turned into Hounsfield units with the modality LUT, ``HU = RescaleSlope · stored + RescaleIntercept``, then
  mapped linearly from the HU window ``[lo, hi]`` onto [0, 1] and clipped:
  ``x = clip((HU − lo) / (hi − lo), 0, 1)``.
  The default window is :data:`DEFAULT_HU_WINDOW` = [-1000, 1000] HU (air → 0, water → 0.5, dense bone → 1). It is
  exactly the mapping ``restore prior train --value-map hu:-1000,1000`` applies to 16-bit training PNGs stored as
  HU + 1024 (``../shared/data/train/ct512_hu1024``), so a CT prior trained that way sees DICOM slices on the scale
  it was trained on. Override it with the ``hu_window`` argument or the environment variable ``RESTORE_HU_WINDOW``
  (``"-160,240"`` or ``"hu:-160,240"``); the argument wins over the variable. A prior trained with another
  ``--value-map`` needs the same window here.
* **Other monochrome modalities** (MR, X-ray, ... without an explicit window): the rescaled values are divided by the
  range of the stored bits, ``x = (v − v_min) / (v_max − v_min)`` with ``v_min``/``v_max`` the rescaled values of the
  smallest and largest storable integers (``BitsStored``, ``PixelRepresentation``): a fixed mapping, independent of
  the image content, like 8/16-bit PNGs.
* **Colour** (``SamplesPerPixel`` 3, e.g. RGB ultrasound) is read as pydicom decodes it (RGB), 8 or 16 bit → [0, 1].

``MONOCHROME1`` images (smallest value displayed white) are inverted after the mapping, ``x → 1 − x``, so that
[0, 1] reads as displayed; the metadata says ``inverted``. Multi-frame files (``NumberOfFrames`` > 1: cine, 3-D
volumes in one file) are refused: restore reads one slice per file. Compressed transfer syntaxes that no installed
decoder can read (JPEG Lossless, JPEG-LS, ... without pylibjpeg or GDCM) are refused with the packages to install.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import RestoreError

DICOM_SUFFIXES = {".dcm", ".dicom"}
DEFAULT_HU_WINDOW = (-1000.0, 1000.0)
HU_WINDOW_ENV = "RESTORE_HU_WINDOW"
INSTALL_HINT = "pip install 'restore[dicom]'"
DECODER_HINT = ("install a decoder with 'pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg' (or "
                "'pip install python-gdcm'), or decompress the file first (e.g. 'gdcmconv --raw IN OUT')")


def has_dicom_preamble(path: "str | Path") -> bool:
    """True when the file holds ``DICM`` at byte 128 (the DICOM Part 10 preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: "str | Path") -> bool:
    """A ``.dcm``/``.dicom`` file, or any file that starts with the DICOM preamble."""
    path = Path(path)
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_preamble(path)


def parse_hu_window(text: str, source: str = "the HU window") -> tuple[float, float]:
    """``"LO,HI"`` or ``"hu:LO,HI"`` → (lo, hi) with lo < hi, both finite."""
    raw = text.strip()
    if raw.lower().startswith("hu:"):
        raw = raw[3:]
    try:
        lo, hi = (float(v) for v in raw.split(","))
    except ValueError:
        raise RestoreError(f"cannot read {source} '{text}'; write it as LO,HI in Hounsfield units, e.g. "
                           f"'-1000,1000'.") from None
    return _check_window((lo, hi), source)


def _check_window(window, source: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise RestoreError(f"{source} must be two numbers (LO, HI) in Hounsfield units, got {window!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise RestoreError(f"{source} [{lo:g}, {hi:g}] is not a window; give LO < HI in Hounsfield units, e.g. "
                           f"'-1000,1000'.")
    return lo, hi


def resolve_hu_window(hu_window=None) -> tuple[tuple[float, float], str]:
    """(window, where it came from): the argument, else $RESTORE_HU_WINDOW, else :data:`DEFAULT_HU_WINDOW`."""
    if hu_window is not None:
        if isinstance(hu_window, str):
            return parse_hu_window(hu_window, "hu_window"), "argument"
        return _check_window(hu_window, "hu_window"), "argument"
    env = os.environ.get(HU_WINDOW_ENV, "").strip()
    if env:
        return parse_hu_window(env, f"${HU_WINDOW_ENV}"), "environment"
    return DEFAULT_HU_WINDOW, "default"


def _import_pydicom():
    try:
        import pydicom
    except ImportError:
        raise RestoreError(f"reading DICOM files needs the pydicom package, which is not installed; install it "
                           f"with {INSTALL_HINT}.") from None
    return pydicom


def _decoder_missing(ts) -> bool:
    """True when pydicom has no usable decoder for the transfer syntax ``ts`` here."""
    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3
    except ImportError:  # pydicom 2.x: any failure on a compressed syntax is taken as a missing decoder
        return True
    try:
        return not get_decoder(ts).is_available
    except Exception:  # noqa: BLE001 - no decoder registered at all for this syntax
        return True


def read_dicom(path: "str | Path", hu_window=None) -> tuple[np.ndarray, dict]:
    """Read one DICOM slice: (float32 H×W or H×W×3 array on [0, 1], metadata dict).

    The metadata holds ``format`` ("dicom"), ``value_map`` ("hu:LO,HI", "bits" or "rgb"), ``hu_window`` ([lo, hi] or
    None), ``hu_window_source`` (argument/environment/default), ``rescale_slope``, ``rescale_intercept``,
    ``photometric``, ``inverted``, ``modality`` and ``transfer_syntax``: what a sidecar needs to say how the
    [0, 1] image was made.
    """
    path = Path(path)
    pydicom = _import_pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), force=not has_dicom_preamble(path))
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, AttributeError, TypeError) as exc:
        raise RestoreError(f"cannot read '{path}' as DICOM ({type(exc).__name__}: {_short(exc)}); give an "
                           f"uncorrupted DICOM file.") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise RestoreError(f"'{path}' is a DICOM file without an image (no pixel data; a report, structure set or "
                           f"DICOMDIR?); give an image slice.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise RestoreError(f"'{path}' is a multi-frame DICOM ({frames} frames); restore reads one slice per file: "
                           f"split it into single-frame files first (e.g. with pydicom or 'dcmsplit').")
    file_meta = getattr(ds, "file_meta", None)
    ts = getattr(file_meta, "TransferSyntaxUID", None) if file_meta is not None else None
    ts_name = getattr(ts, "name", str(ts)) if ts is not None else "unknown"
    if ts is not None and getattr(ts, "is_compressed", False) and _decoder_missing(ts):
        raise RestoreError(f"'{path}' is compressed ({ts_name}) and no installed decoder can read it; "
                           f"{DECODER_HINT}.")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoder failure is an unreadable file for the user
        if ts is not None and getattr(ts, "is_compressed", False):
            raise RestoreError(f"cannot decode the compressed pixel data of '{path}' ({ts_name}: {_short(exc)}); "
                               f"{DECODER_HINT}.") from None
        raise RestoreError(f"cannot decode the pixel data of '{path}' ({type(exc).__name__}: {_short(exc)}); the "
                           f"file is truncated or corrupt.") from None
    raw = np.asarray(raw)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    modality = str(ds.get("Modality", "")).strip().upper()
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    meta = dict(format="dicom", modality=modality, photometric=photometric, transfer_syntax=ts_name,
                rescale_slope=slope, rescale_intercept=intercept, hu_window=None, hu_window_source=None,
                inverted=False)
    if samples != 1 or raw.ndim == 3:
        if raw.ndim != 3 or raw.shape[-1] != 3:
            raise RestoreError(f"'{path}' has pixel data of shape {raw.shape}; restore reads one grey or RGB slice "
                               f"per file.")
        scale = 255.0 if raw.dtype == np.uint8 else float(2 ** int(ds.get("BitsStored", 16)) - 1)
        out = np.clip(raw.astype(np.float32) / scale, 0.0, 1.0)
        meta.update(value_map="rgb")
        return out, meta
    if raw.ndim != 2:
        raise RestoreError(f"'{path}' has pixel data of shape {raw.shape}; restore reads one 2-D slice per file.")
    values = raw.astype(np.float64) * slope + intercept  # modality LUT: stored → HU for CT
    is_ct = modality == "CT" or str(ds.get("RescaleType", "")).strip().upper() == "HU"
    explicit = hu_window is not None or bool(os.environ.get(HU_WINDOW_ENV, "").strip())
    if is_ct or explicit:
        (lo, hi), source = resolve_hu_window(hu_window)
        out = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
        meta.update(value_map=f"hu:{lo:g},{hi:g}", hu_window=[lo, hi], hu_window_source=source)
    else:
        bits = int(ds.get("BitsStored", raw.dtype.itemsize * 8) or raw.dtype.itemsize * 8)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        smin, smax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        vmin, vmax = sorted((smin * slope + intercept, smax * slope + intercept))
        out = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
        meta.update(value_map="bits", bits_stored=bits)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
        meta["inverted"] = True
    if not np.isfinite(out).all():
        raise RestoreError(f"'{path}' holds NaN or infinite values after rescaling; check RescaleSlope/Intercept.")
    return out.astype(np.float32), meta


def hu_of(x: np.ndarray, meta: dict) -> np.ndarray:
    """Back from [0, 1] to HU inside the window recorded in ``meta`` (values at 0 or 1 were clipped)."""
    lo, hi = meta["hu_window"]
    x = np.asarray(x, dtype=np.float64)
    if meta.get("inverted"):
        x = 1.0 - x
    return lo + x * (hi - lo)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
