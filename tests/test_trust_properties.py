"""Property-based: whatever image (format, PIL mode, size, values) and whatever flags a user gives, `restore solve`
and `restore degrade` end with exit 0, or exit 2 and one sentence; never a traceback; and every input file is
byte-identical afterwards (also when --out is the input folder itself)."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from restore.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ["L", "RGB", "RGBA", "P", "CMYK", "LA", "1", "I;16", "F", "YCbCr"]
FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP", "webp": "WEBP", "gif": "GIF"}


def _write(folder: Path, name: str, fmt: str, mode: str, h: int, w: int, seed: int) -> Path | None:
    rng = np.random.default_rng(seed)
    if fmt == "npy":
        kind = seed % 4
        arr = [rng.random((h, w), np.float32), rng.random((3, h, w)).astype(np.float32) * 300,
               (rng.random((h, w)) * 255).astype(np.uint8),
               (rng.random((h, w)) + 1j * rng.random((h, w))).astype(np.complex64) * 0.5][kind]
        path = folder / f"{name}.npy"
        np.save(path, arr)
        return path
    im = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        im = Image.fromarray((rng.random((h, w)) * 65535).astype(np.uint16))
    elif mode == "F":
        im = Image.fromarray(rng.random((h, w)).astype(np.float32), mode="F")
    else:
        im = im.convert(mode)
    path = folder / f"{name}.{fmt}"
    try:
        im.save(path, format=FORMATS[fmt])
    except (OSError, ValueError, KeyError):
        return None  # this format cannot hold this mode: not an input a user could have
    return path


inputs = st.lists(st.tuples(st.sampled_from(["png", "jpg", "tif", "bmp", "webp", "gif", "npy"]),
                            st.sampled_from(MODES), st.integers(1, 40), st.integers(1, 40),
                            st.integers(0, 10_000)), min_size=1, max_size=3)
flags = st.fixed_dictionaries({
    # valid values are listed more often than the bad ones, so that most examples get past the flag checks
    "operator": st.sampled_from(["denoise", "denoise", "sr4", "sr2", "deblur-gauss", "inpaint-random", "inpaint-box",
                                 "mri-4x", "ct:views=10", "nonsense", "sr:factor=3"]),
    "noise": st.sampled_from(["0", "0.05", "0.05", "0.01", "poisson:50", "-1", "abc"]),
    "batch": st.sampled_from(["1", "1", "2", "3", "0", "-3"]),
    "samples": st.sampled_from(["1", "1", "1", "2", "0", "100000000"]),
    "out_is_input": st.booleans(),
    "same_stem": st.booleans(),
    "fit": st.sampled_from([None, "pad", "crop", "resize", "bogus"]),
})


def _inputs(tmp: Path, images, f) -> tuple[Path, Path, dict]:
    """The input folder written from the drawn images, the --out to use, and the inputs' bytes before the run."""
    folder = tmp / "in"
    folder.mkdir()
    for k, (fmt, mode, h, w, seed) in enumerate(images):
        _write(folder, "same" if f["same_stem"] else f"img{k}", fmt, mode, h, w, seed)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    return folder, folder if f["out_is_input"] else tmp / "out", before


def _check(code: int, err: str, out: str) -> None:
    assert "Traceback" not in err + out
    assert code in (0, 2), (code, err)
    if code == 2:
        text = " ".join(err.split())
        assert text.startswith("error:") or text.startswith("Usage:"), text
        if text.startswith("error:"):
            assert text.count("error:") == 1, text


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(images=inputs, f=flags)
def test_solve_never_tracebacks_and_never_touches_inputs(images, f, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        folder, out, before = _inputs(Path(tmp), images, f)
        if not before:
            return
        argv = ["solve", str(folder), "--solver", "pinv", "-o", f["operator"], "--noise", f["noise"],
                "--batch-size", f["batch"], "--samples", f["samples"], "--out", str(out)]
        if f["fit"]:
            argv += ["--fit", f["fit"]]
        code = main(argv)
        captured = capsys.readouterr()
        _check(code, captured.err, captured.out)
        after = {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before}
        assert after == before


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(images=inputs, f=flags)
def test_degrade_never_tracebacks_and_never_touches_inputs(images, f, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        folder, out, before = _inputs(Path(tmp), images, f)
        if not before:
            return
        code = main(["degrade", str(folder), "-o", f["operator"], "--noise", f["noise"], "--out", str(out)])
        captured = capsys.readouterr()
        _check(code, captured.err, captured.out)
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before
