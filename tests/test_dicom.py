"""DICOM input: HU via RescaleSlope/Intercept, the documented HU window → [0, 1], MONOCHROME1, refusals, CLI wiring.

Real CT slices from ../shared/data/test/ct_dicom (skipped when absent) and synthetic DICOM files written with pydicom
into tmp_path (always run).
"""

import json
import sys

import numpy as np
import pytest
import torch

from restore.cli import main
from restore.dicom import DEFAULT_HU_WINDOW, HU_WINDOW_ENV, hu_of
from restore.io import RestoreError, find_images, load_image, load_image_meta

pydicom = pytest.importorskip("pydicom")


@pytest.fixture(autouse=True)
def _no_window_from_the_environment(monkeypatch):
    monkeypatch.delenv(HU_WINDOW_ENV, raising=False)


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def write_dicom(path, pixels, slope=1.0, intercept=-1024.0, photometric="MONOCHROME2", modality="CT",
                bits_stored=16, frames=None, transfer_syntax=None, pixel_data=None):
    """A minimal single-slice (or multi-frame) DICOM file with the Part 10 preamble."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if frames:
        ds.NumberOfFrames = frames
    ds.PixelData = pixel_data if pixel_data is not None else pixels.tobytes()
    if pixel_data is not None:
        ds["PixelData"].VR = "OB"
    try:
        ds.save_as(str(path), enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)  # pydicom 2.x
    return path


def window01(hu, window=DEFAULT_HU_WINDOW):
    lo, hi = window
    return np.clip((np.asarray(hu, np.float64) - lo) / (hi - lo), 0, 1)


# ------------------------------------------------------------------------------------------------------------------
# the real CT slices


def _ct_files(shared):
    folder = shared / "test" / "ct_dicom"
    files = sorted(folder.glob("*.dcm"))
    if not files:
        pytest.skip("../shared/data/test/ct_dicom holds no DICOM files")
    return files


def test_shared_ct_slices_map_hu_through_the_default_window(shared):
    for f in _ct_files(shared):
        x, meta = load_image_meta(f)
        assert x.shape == (1, 512, 512) and x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert meta["hu_window"] == list(DEFAULT_HU_WINDOW) and meta["value_map"] == "hu:-1000,1000"
        ds = pydicom.dcmread(str(f))
        raw = ds.pixel_array.astype(np.float64)
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        assert (meta["rescale_slope"], meta["rescale_intercept"]) == (slope, intercept)
        hu = slope * raw + intercept
        # a known pixel inside the window: the centre-most tissue pixel, so the HU are recoverable exactly
        inside = np.argwhere((hu > -900) & (hu < 900))
        r, c = inside[np.argmin(((inside - 256) ** 2).sum(1))]
        value = float(x[0, r, c])
        assert value == pytest.approx((hu[r, c] + 1000) / 2000, abs=1e-6)
        assert float(hu_of(value, meta)) == pytest.approx(slope * raw[r, c] + intercept, abs=0.01)
        # clipped outside the window: air/padding at 0
        assert float(x[0][torch.from_numpy(hu < -1000)].max()) == 0.0


def test_shared_ct_matches_an_independent_pydicom_modality_lut(shared):
    try:
        from pydicom.pixels import apply_modality_lut  # pydicom >= 3
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    for f in _ct_files(shared)[:4]:
        ds = pydicom.dcmread(str(f))
        expected = window01(apply_modality_lut(ds.pixel_array, ds))
        assert np.abs(load_image(f)[0].numpy() - expected).max() < 1e-6
        # another window given as an argument changes the mapping accordingly
        narrow = load_image(f, hu_window=(-160, 240))[0].numpy()
        assert np.abs(narrow - window01(apply_modality_lut(ds.pixel_array, ds), (-160, 240))).max() < 1e-6


def test_shared_ct_folder_degrades_and_solves(shared, tmp_path, capsys):
    folder = shared / "test" / "ct_dicom"
    _ct_files(shared)
    assert len(find_images([str(folder)])) == len(list(folder.glob("*.dcm")))
    src = tmp_path / "two"
    src.mkdir()
    for f in _ct_files(shared)[:2]:
        (src / f.name).write_bytes(f.read_bytes())
    code, _, err = run(capsys, "degrade", src, "-o", "denoise", "--noise", "0.01", "--out", tmp_path / "m")
    assert code == 0, err
    code, _, err = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--out", tmp_path / "r")
    assert code == 0, err
    side = json.loads((tmp_path / "r" / (_ct_files(shared)[0].stem + ".json")).read_text())
    assert side["image_shape"] == [1, 512, 512] and side["metrics"]["psnr"] > 30  # reference = the .dcm itself


# ------------------------------------------------------------------------------------------------------------------
# synthetic DICOM files


def test_slope_and_intercept_are_applied(tmp_path):
    raw = np.array([[0, 100, 500, 1000], [1500, 2000, 2500, 4000]], np.uint16)
    f = write_dicom(tmp_path / "s.dcm", raw, slope=0.5, intercept=-600.0)
    x, meta = load_image_meta(f)
    hu = 0.5 * raw - 600.0  # -600 ... 1400
    assert x.shape == (1, 2, 4)
    assert np.allclose(x[0].numpy(), window01(hu), atol=1e-7)
    assert float(x[0, 0, 0]) == pytest.approx(0.2)  # -600 HU → (−600 + 1000) / 2000
    assert float(x[0, 1, 3]) == 1.0  # 1400 HU clipped at the window's top
    assert meta["rescale_slope"] == 0.5 and meta["rescale_intercept"] == -600.0 and not meta["inverted"]


def test_signed_pixels_and_window_overrides(tmp_path, monkeypatch):
    raw = np.array([[-1024, -24, 976, 3000]], np.int16)
    f = write_dicom(tmp_path / "signed.dcm", raw, slope=1.0, intercept=0.0)
    assert np.allclose(load_image(f)[0].numpy(), window01(raw), atol=1e-7)
    monkeypatch.setenv(HU_WINDOW_ENV, "hu:-24,976")
    x, meta = load_image_meta(f)
    assert np.allclose(x[0, 0].numpy(), [0, 0, 1, 1]) and meta["hu_window_source"] == "environment"
    x, meta = load_image_meta(f, hu_window="-1024,976")  # the argument wins over the environment
    assert np.allclose(x[0, 0].numpy(), [0, 0.5, 1, 1]) and meta["hu_window"] == [-1024, 976]
    for bad in ("1000,-1000", "wide", "1,2,3"):
        with pytest.raises(RestoreError, match="window|LO,HI"):
            load_image(f, hu_window=bad)


def test_monochrome1_is_inverted(tmp_path):
    raw = np.array([[0, 500, 1024, 2024]], np.uint16)
    x2 = load_image(write_dicom(tmp_path / "m2.dcm", raw, photometric="MONOCHROME2"))
    x1, meta = load_image_meta(write_dicom(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1"))
    assert meta["inverted"] and meta["photometric"] == "MONOCHROME1"
    assert torch.allclose(x1, 1 - x2, atol=1e-7)
    assert float(x1[0, 0, 0]) == 1.0  # the smallest value is displayed white
    assert float(hu_of(x1[0, 0, 1].item(), meta)) == pytest.approx(500 - 1024, abs=0.01)


def test_non_ct_modality_is_scaled_by_its_bit_depth(tmp_path):
    raw = np.array([[0, 1000, 4095]], np.uint16)
    x, meta = load_image_meta(write_dicom(tmp_path / "mr.dcm", raw, slope=1, intercept=0, modality="MR",
                                          bits_stored=12))
    assert meta["value_map"] == "bits" and meta["hu_window"] is None
    assert np.allclose(x[0, 0].numpy(), raw[0] / 4095, atol=1e-7)


def test_a_file_without_suffix_is_recognised_by_its_preamble(tmp_path):
    raw = np.full((4, 6), 1024, np.uint16)
    folder = tmp_path / "series"
    folder.mkdir()
    write_dicom(folder / "IM0001", raw)
    (folder / "README").write_text("not an image")
    found = find_images([str(folder)])
    assert [rel.as_posix() for _, rel in found] == ["IM0001"]
    x = load_image(folder / "IM0001")
    assert x.shape == (1, 4, 6) and np.allclose(x.numpy(), 0.5)


def test_multi_frame_is_refused(tmp_path):
    raw = np.zeros((3, 4, 4), np.uint16)
    f = write_dicom(tmp_path / "cine.dcm", raw, frames=3)
    with pytest.raises(RestoreError, match="multi-frame DICOM \\(3 frames\\)"):
        load_image(f)


def test_undecodable_compression_names_the_fix(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLossless

    f = write_dicom(tmp_path / "jpeg.dcm", np.zeros((8, 8), np.uint16), transfer_syntax=JPEGLossless,
                    pixel_data=encapsulate([b"\xff\xd8\xff\xc3not really a jpeg\xff\xd9"]))
    with pytest.raises(RestoreError, match="pylibjpeg") as info:
        load_image(f)
    assert "JPEG Lossless" in str(info.value)


def test_corrupt_dicom_is_one_sentence(tmp_path):
    f = write_dicom(tmp_path / "cut.dcm", np.zeros((64, 64), np.uint16))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 3000])
    with pytest.raises(RestoreError, match="cut.dcm"):
        load_image(f)
    (tmp_path / "text.dcm").write_text("hello")
    with pytest.raises(RestoreError, match="text.dcm"):
        load_image(tmp_path / "text.dcm")


def test_missing_pydicom_is_a_clear_error(tmp_path, monkeypatch, capsys):
    f = write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # "import pydicom" now raises ImportError
    with pytest.raises(RestoreError, match=r"pip install 'restore\[dicom\]'"):
        load_image(f)
    code, out, err = run(capsys, "degrade", f, "-o", "denoise", "--out", tmp_path / "m")
    assert code == 2 and "pip install 'restore[dicom]'" in err and "Traceback" not in err + out


def _dicom_folder(tmp_path, n=2, size=16):
    g = np.random.default_rng(0)
    src = tmp_path / "ct"
    src.mkdir()
    for k in range(n):
        write_dicom(src / f"slice{k}.dcm", g.integers(0, 2048, (size, size)).astype(np.uint16))
    return src


def test_dicom_through_degrade_and_solve(tmp_path, capsys):
    src = _dicom_folder(tmp_path)
    code, _, err = run(capsys, "degrade", src, "-o", "ct:views=12", "--out", tmp_path / "m")
    assert code == 0, err
    code, _, err = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--out", tmp_path / "r")
    assert code == 0, err
    assert load_image(tmp_path / "r" / "slice0.png").shape == (1, 16, 16)
    side = json.loads((tmp_path / "r" / "slice0.json").read_text())
    assert side["reference"].endswith("slice0.dcm") and side["metrics"]["psnr"] > 5
    assert side["input_values"]["format"] == "dicom" and list(side["input_values"]["hu_window"]) == [-1000, 1000]
    # a plain DICOM file as the measurement of an operator (here: a noisy slice to denoise)
    code, _, err = run(capsys, "solve", src / "slice1.dcm", "--solver", "pinv", "-o", "denoise", "--noise", "0.01",
                       "--out", tmp_path / "p")
    assert code == 0, err
    assert torch.allclose(load_image(tmp_path / "p" / "slice1.png"), load_image(src / "slice1.dcm"), atol=0.5 / 255)


def test_dicom_through_bench(tmp_path, capsys):
    src = _dicom_folder(tmp_path)
    code, _, err = run(capsys, "bench", src, "-o", "denoise", "--solver", "pinv", "--noise", "0.01",
                       "--baselines", "none", "--out", tmp_path / "b")
    assert code == 0, err
    assert len(json.loads((tmp_path / "b" / "results.json").read_text())) == 2
