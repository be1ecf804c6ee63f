"""The command line's degrade/list commands and image/measurement I/O, including bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import operators
from restore.cli import main
from restore.io import RestoreError, load_image, load_measurement, save_image

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_degrade_writes_a_measurement_that_rebuilds_its_operator(tmp_path, capsys):
    code, out, err = run(capsys, "degrade", str(SAMPLES / "astronaut_face64.png"), "--operator",
                         "mask:kind=box,size=20,margin=4", "--noise", "0.05", "--seed", "3", "--out", str(tmp_path))
    assert code == 0, err
    m = load_measurement(tmp_path / "astronaut_face64.npz")
    assert (tmp_path / "astronaut_face64_measurement.png").is_file()
    assert m.noise == operators.Noise.parse(0.05)
    op = m.operator()
    x = load_image(SAMPLES / "astronaut_face64.png")[None]
    # the stored measurement is exactly A(x) + noise drawn from the stored seed
    again = operators.measure(op, x, m.noise, [m.seed])
    assert torch.equal(again, m.y)
    assert float((op.mask == 0).sum()) == 20 * 20


def test_degrade_never_overwrites_without_asking(tmp_path, capsys):
    args = ["degrade", str(SAMPLES / "astronaut_face64.png"), "-o", "inpaint-random", "--out", str(tmp_path)]
    assert run(capsys, *args)[0] == 0
    target = tmp_path / "astronaut_face64.npz"
    before = target.read_bytes()
    code, out, _ = run(capsys, *args[:-2], "--noise", "0.1", "--out", str(tmp_path))
    assert code == 0 and "skipped" in out
    assert target.read_bytes() == before
    assert run(capsys, *args[:-2], "--noise", "0.1", "--out", str(tmp_path), "--overwrite")[0] == 0
    assert target.read_bytes() != before


def test_degrade_folder_keeps_the_structure(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    save_image(src / "a.png", torch.rand(3, 32, 32))
    save_image(src / "sub" / "b.png", torch.rand(1, 32, 32))
    code, _, err = run(capsys, "degrade", str(src), "-o", "denoise", "--noise", "0.1", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "a.npz").is_file() and (tmp_path / "out" / "sub" / "b.npz").is_file()
    assert not list((tmp_path / "out").rglob("*.part*")), "no temporary files left behind"


@pytest.mark.parametrize("make_args, fragment", [
    (lambda t: ["degrade", str(t / "missing.png"), "-o", "denoise", "--out", str(t)], "does not exist"),
    (lambda t: ["degrade", str(SAMPLES / "camera.png"), "-o", "nonsense", "--out", str(t)], "unknown operator"),
    (lambda t: ["degrade", str(SAMPLES / "camera.png"), "-o", "mask:kind=box,size=999", "--out", str(t / "o")],
     "does not fit"),
    (lambda t: ["degrade", str(SAMPLES / "camera.png"), "-o", "denoise", "--noise", "loud", "--out", str(t)],
     "cannot read the noise"),
    (lambda t: ["degrade", str(t / "empty"), "-o", "denoise", "--out", str(t / "o")], "holds no images"),
    (lambda t: ["degrade", str(SAMPLES / "camera.png"), "-o", "denoise", "--out", str(t / "file.txt")], "is a file"),
    (lambda t: ["degrade", str(t / "bad.png"), "-o", "denoise", "--out", str(t / "o")], "cannot read"),
])
def test_bad_input_is_one_sentence_and_exit_code_2(tmp_path, capsys, make_args, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    code, out, err = run(capsys, *make_args(tmp_path))
    assert code == 2
    assert fragment in " ".join(err.split())
    assert "Traceback" not in err + out


def test_list_commands(capsys):
    code, out, _ = run(capsys, "list", "operators")
    assert code == 0 and "mask" in out and "mri" in out and "ct" in out
    code, out, _ = run(capsys, "list", "presets")
    assert code == 0 and "inpaint-box" in out and "mri-4x" in out


def test_load_image_formats(tmp_path):
    grey16 = (np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    x = load_image(tmp_path / "g16.png")
    assert x.shape == (1, 48, 64) and torch.allclose(x[0], torch.from_numpy(grey16 / 65535.0).float(), atol=1e-6)

    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 17
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 8, 10) and abs(float(x[0, 0, 0]) - 200 / 255) < 1e-6

    arr = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", arr)
    assert torch.allclose(load_image(tmp_path / "f.npy"), torch.from_numpy(arr).permute(2, 0, 1))

    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", arr[..., 0])
    assert torch.allclose(load_image(tmp_path / "f.tif")[0], torch.from_numpy(arr[..., 0]))


def test_exif_orientation_is_honoured(tmp_path):
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :5] = 255  # bright left strip on a landscape image
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    x = load_image(tmp_path / "r.jpg")
    assert x.shape == (3, 20, 10)  # displayed as portrait
    assert float(x[:, :5].mean()) > 0.9  # the strip is now on top


def test_corrupt_measurement_file_is_refused(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"garbage")
    with pytest.raises(RestoreError, match="not a measurement file"):
        load_measurement(tmp_path / "m.npz")


def test_outputs_get_the_usual_file_permissions(tmp_path):
    import os
    import stat

    path = save_image(tmp_path / "x.png", torch.rand(3, 8, 8))
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
