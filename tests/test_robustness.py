"""What happens when things go wrong: Ctrl-C mid-folder, a full disk, unwritable or impossible outputs, empty
folders, corrupt checkpoints and measurements, and unusual but valid inputs (alpha PNG, 16-bit TIFF).

Every test runs the real command line (``restore.cli.main``) with the pinv solver or a tiny random prior, so the whole
suite runs in seconds on one thread.
"""

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import restore.solve as rsolve
from restore.cli import main
from restore.io import load_image, load_measurement, save_image
from solver_testing import tiny_unet_prior

pytestmark = pytest.mark.usefixtures("one_thread")

N = 5  # images in the folder tests


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def make_folder(folder: Path, n: int = N, seed: int = 0, size: int = 16) -> list[str]:
    """n random RGB PNGs named img0.png ... (sorted order = processing order)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for k in range(n):
        save_image(folder / f"img{k}.png", torch.rand(3, size, size, generator=g))
    return [f"img{k}" for k in range(n)]


def solve_args(src, out, *extra):
    return ["solve", src, "--solver", "pinv", "-o", "denoise", "--noise", "0.01", "--out", out, *extra]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".part" in p.name]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_complete(out: Path, name: str, src: Path):
    """The output and its sidecar exist, load, and describe each other."""
    img = load_image(out / f"{name}.png")
    side = json.loads((out / f"{name}.json").read_text())
    assert img.shape == (3, 16, 16)
    assert side["output"] == str(out / f"{name}.png") and side["input"] == str(src / f"{name}.png")
    # pinv on denoise returns the measurement: the written image is this run's input (to 8-bit rounding)
    assert torch.allclose(img, load_image(src / f"{name}.png"), atol=0.5 / 255 + 1e-6)


# ------------------------------------------------------------------------------------------------------------------
# (a) Ctrl-C mid-folder


def test_ctrl_c_mid_folder_keeps_finished_outputs_and_resumes(tmp_path, capsys, monkeypatch):
    names = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    real_solve, calls = rsolve.solve, []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(rsolve, "solve", interrupted_on_the_third)
    code, _, err = run(capsys, *solve_args(tmp_path / "in", out))
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    for name in names[:2]:
        assert_complete(out, name, tmp_path / "in")
    for name in names[2:]:
        assert not (out / f"{name}.png").exists() and not (out / f"{name}.json").exists()
    assert no_temporaries(out)
    first_two = {k: v for k, v in snapshot(out).items()}

    monkeypatch.setattr(rsolve, "solve", real_solve)
    code, stdout, err = run(capsys, *solve_args(tmp_path / "in", out))
    assert code == 0, err
    assert stdout.count("skipped") == 2
    for name in names:
        assert_complete(out, name, tmp_path / "in")
    after = snapshot(out)
    assert all(after[k] == v for k, v in first_two.items()), "the first two were skipped, not redone"
    assert no_temporaries(out)


def test_ctrl_c_while_writing_never_pairs_an_image_with_another_runs_sidecar(tmp_path, capsys, monkeypatch):
    """--overwrite with new inputs, interrupted while the 3rd sidecar is written: the 3rd image keeps its old image
    and old sidecar together (no new image beside the old sidecar, which a rerun would skip as done)."""
    names = make_folder(tmp_path / "in", seed=0)
    out = tmp_path / "out"
    assert run(capsys, *solve_args(tmp_path / "in", out))[0] == 0
    old = snapshot(out)
    make_folder(tmp_path / "in", seed=1)  # new content under the same names
    real_write_json, calls = rsolve.write_json, []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write_json(*args, **kwargs)

    monkeypatch.setattr(rsolve, "write_json", interrupted_on_the_third)
    code, _, _ = run(capsys, *solve_args(tmp_path / "in", out, "--overwrite"))
    assert code == 130
    now = snapshot(out)
    for name in names[:2]:
        assert_complete(out, name, tmp_path / "in")  # redone from the new inputs
    for name in names[2:]:
        assert now[f"{name}.png"] == old[f"{name}.png"] and now[f"{name}.json"] == old[f"{name}.json"]
    assert no_temporaries(out)


# ------------------------------------------------------------------------------------------------------------------
# (b) a full disk, no permission


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_on_rename_is_one_sentence_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    make_folder(tmp_path / "in", n=2)
    out = tmp_path / "out"
    monkeypatch.setattr(os, "replace", _enospc)
    code, stdout, err = run(capsys, *solve_args(tmp_path / "in", out))
    assert code == 2
    assert err.count("error:") == 1 and "No space left on device" in err and "free some space" in err
    assert "img0.png" in err and ".part" not in err  # names the output, not a temporary file
    assert "Traceback" not in err + stdout
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize("fail_on", ["image", "sidecar"])
def test_full_disk_while_writing_keeps_existing_outputs(tmp_path, capsys, monkeypatch, fail_on):
    """--overwrite with new inputs on a disk that fills up halfway through a file: the old image and its sidecar
    stay exactly as they were, and no partial file is left."""
    make_folder(tmp_path / "in", n=2, seed=0)
    out = tmp_path / "out"
    assert run(capsys, *solve_args(tmp_path / "in", out))[0] == 0
    old = snapshot(out)
    make_folder(tmp_path / "in", n=2, seed=1)
    if fail_on == "image":
        real_save = Image.Image.save

        def half_then_full(self, fp, *args, **kwargs):
            real_save(self, fp, *args, **kwargs)
            Path(fp).write_bytes(Path(fp).read_bytes()[:40])  # a partial PNG on disk, then the error
            _enospc()

        monkeypatch.setattr(Image.Image, "save", half_then_full)
    else:
        real_write_text = Path.write_text

        def half_then_full(self, text, *args, **kwargs):
            if ".json" in self.name:
                real_write_text(self, text[: len(text) // 2], *args, **kwargs)
                _enospc()
            return real_write_text(self, text, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", half_then_full)
    code, _, err = run(capsys, *solve_args(tmp_path / "in", out, "--overwrite"))
    assert code == 2 and "No space left on device" in err and "free some space" in err
    assert snapshot(out) == old
    assert no_temporaries(out)


def test_full_disk_in_degrade_keeps_the_old_measurement(tmp_path, capsys, monkeypatch):
    make_folder(tmp_path / "in", n=1)
    args = ["degrade", tmp_path / "in", "-o", "denoise", "--noise", "0.1", "--out", tmp_path / "m"]
    assert run(capsys, *args)[0] == 0
    old = snapshot(tmp_path / "m")
    monkeypatch.setattr(os, "replace", _enospc)
    code, _, err = run(capsys, *args, "--overwrite", "--seed", "7")
    assert code == 2 and "free some space" in err
    assert snapshot(tmp_path / "m") == old and no_temporaries(tmp_path / "m")
    load_measurement(tmp_path / "m" / "img0.npz")


def test_output_folder_without_write_permission(tmp_path, capsys):
    make_folder(tmp_path / "in", n=1)
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes here")
        code, _, err = run(capsys, *solve_args(tmp_path / "in", out))
        assert code == 2 and "writable" in err and "Traceback" not in err
        assert not list(out.iterdir())
    finally:
        out.chmod(stat.S_IRWXU)


def test_permission_denied_on_the_temporary_file_is_exit_2(tmp_path, capsys, monkeypatch):
    """The same as above wherever chmod cannot be used (root): creating the temporary file is refused."""
    make_folder(tmp_path / "in", n=1)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    code, out, err = run(capsys, *solve_args(tmp_path / "in", tmp_path / "out"))
    assert code == 2 and "Permission denied" in err and "writable --out" in err
    assert "Traceback" not in err + out


# ------------------------------------------------------------------------------------------------------------------
# (c) (d) impossible outputs, empty inputs


def test_output_path_that_is_a_file(tmp_path, capsys):
    make_folder(tmp_path / "in", n=1)
    (tmp_path / "taken").write_text("keep me")
    code, _, err = run(capsys, *solve_args(tmp_path / "in", tmp_path / "taken"))
    assert code == 2 and "is a file" in err and "--out" in err
    code, _, err = run(capsys, *solve_args(tmp_path / "in", tmp_path / "taken" / "sub"))
    assert code == 2 and "a file of that name exists" in err
    assert (tmp_path / "taken").read_text() == "keep me"


def test_folder_without_images(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, *solve_args(empty, tmp_path / "out"))
    assert code == 2 and "holds no images" in err
    # only things that are not images: notes, a hidden macOS resource fork ('._x.png' is not a PNG), a temporary
    (empty / "notes.txt").write_text("x")
    (empty / "._x.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (empty / ".img0.png.abc123.part.png").write_bytes(b"\x89PNG partial")
    code, _, err = run(capsys, *solve_args(empty, tmp_path / "out"))
    assert code == 2 and "holds no images" in err
    code, _, err = run(capsys, "degrade", empty, "-o", "denoise", "--out", tmp_path / "m")
    assert code == 2 and "holds no images" in err


# ------------------------------------------------------------------------------------------------------------------
# (e) a corrupt checkpoint


def _tiny_prior_file(folder: Path, size: int = 16, suffix: str = ".safetensors") -> Path:
    from safetensors.torch import save_file

    prior = tiny_unet_prior(channels=3, size=size)
    path = folder / f"tiny{size}{suffix}"
    state = {k: v.contiguous() for k, v in prior.net.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    card = prior.card
    card.architecture = {"kind": "adm", **prior.net.cfg.to_dict()}
    path.with_suffix(".json").write_text(json.dumps(card.to_dict()))
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_checkpoint_is_refused(tmp_path, capsys, suffix):
    make_folder(tmp_path / "in", n=1)
    prior = _tiny_prior_file(tmp_path, suffix=suffix)
    whole = prior.read_bytes()
    for keep in (len(whole) // 2, 100, 4):
        prior.write_bytes(whole[:keep])
        code, out, err = run(capsys, "solve", tmp_path / "in", "--solver", "ddnm", "--prior", prior, "--steps", "2",
                             "-o", "denoise", "--out", tmp_path / "out")
        assert code == 2, (keep, err)
        assert "truncated or corrupt" in err and "Traceback" not in err + out
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------------------------
# (f) a measurement that does not match its operator


def _edit_npz(path: Path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for key, fn in changes.items():
        arrays[key.replace("__", ".")] = fn(arrays[key.replace("__", ".")])
    np.savez(path, **arrays)


@pytest.mark.parametrize("spec, key, edit, fragment", [
    ("sr:factor=2", "measurement", lambda y: y[..., :7, :], "measurement has shape (3, 7, 8)"),
    ("sr:factor=2", "measurement", lambda y: y[0], "measurement has shape (8, 8)"),
    ("ct:views=10", "measurement", lambda y: y[..., :5, :], "(3, 10, 23)"),
    ("inpaint-random", "state__mask", lambda m: m[..., :5, :], "saved 'mask' has shape"),
    ("sr:factor=2", "measurement", lambda y: np.where(np.arange(y.size).reshape(y.shape) == 3, np.nan, y),
     "NaN or infinite"),
])
def test_measurement_that_does_not_fit_its_operator(tmp_path, capsys, spec, key, edit, fragment):
    save_image(tmp_path / "a.png", torch.rand(3, 16, 16))
    assert run(capsys, "degrade", tmp_path / "a.png", "-o", spec, "--out", tmp_path / "m")[0] == 0
    _edit_npz(tmp_path / "m" / "a.npz", **{key: edit})
    code, out, err = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--out", tmp_path / "r")
    assert code == 2, err
    assert err.count("error:") == 1 and fragment in err and "a.npz" in err and "Traceback" not in err + out
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------------------------
# (g) (h) unusual but valid inputs


def test_alpha_channel_png_is_accepted_with_alpha_dropped(tmp_path, capsys):
    g = np.random.default_rng(0)
    rgb = g.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    alpha = g.integers(0, 256, (16, 16, 1), dtype=np.uint8)  # varying alpha must not scale the colours
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(src / "rgba.png")
    Image.fromarray(np.concatenate([rgb[..., :1], alpha], -1), "LA").save(src / "la.png")
    code, _, err = run(capsys, "solve", src, "--solver", "pinv", "-o", "denoise", "--out", tmp_path / "out")
    assert code == 0, err
    out_rgb = np.asarray(Image.open(tmp_path / "out" / "rgba.png"))
    out_grey = np.asarray(Image.open(tmp_path / "out" / "la.png"))
    assert out_rgb.shape == (16, 16, 3) and np.array_equal(out_rgb, rgb)
    assert out_grey.shape == (16, 16) and np.array_equal(out_grey, rgb[..., 0])
    assert json.loads((tmp_path / "out" / "rgba.json").read_text())["image_shape"] == [3, 16, 16]


def test_16_bit_tiff_input(tmp_path, capsys):
    import tifffile

    g = np.random.default_rng(1)
    grey = g.integers(0, 65536, (24, 20), dtype=np.uint16)
    grey[0, :3] = [0, 65535, 32768]
    rgb = g.integers(0, 65536, (24, 20, 3), dtype=np.uint16)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "grey16.tif", grey)
    tifffile.imwrite(src / "rgb16.tiff", rgb, photometric="rgb")
    # degrade with no noise: the measurement of 'denoise' is the image itself, at full 16-bit precision
    code, _, err = run(capsys, "degrade", src, "-o", "denoise", "--out", tmp_path / "m")
    assert code == 0, err
    y = load_measurement(tmp_path / "m" / "grey16.npz").y[0]
    assert y.shape == (1, 24, 20) and torch.allclose(y[0], torch.from_numpy(grey / 65535.0).float(), atol=1e-7)
    assert float(y[0, 0, 0]) == 0.0 and float(y[0, 0, 1]) == 1.0
    assert load_measurement(tmp_path / "m" / "rgb16.npz").y.shape == (1, 3, 24, 20)
    code, _, err = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--out", tmp_path / "r")
    assert code == 0, err
    side = json.loads((tmp_path / "r" / "grey16.json").read_text())
    assert side["reference"].endswith("grey16.tif") and side["metrics"]["psnr"] > 50  # 8-bit output vs 16-bit truth
    written = np.asarray(Image.open(tmp_path / "r" / "grey16.png"))
    assert np.array_equal(written, np.round(grey / 65535.0 * 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------------------------
# (i) an image the prior cannot take


def test_image_size_that_does_not_fit_the_prior(tmp_path, capsys):
    prior = _tiny_prior_file(tmp_path, size=16)
    save_image(tmp_path / "big.png", torch.rand(3, 32, 24))
    code, out, err = run(capsys, "solve", tmp_path / "big.png", "--solver", "ddnm", "--prior", prior, "--steps", "2",
                         "-o", "denoise", "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in err + out
    assert "restores 16×16 images but this one is 32×24" in err and "resize or crop the input to 16×16" in err
    # a 16×16 low-resolution input for sr4 means a 64×64 image: refused the same way, naming 64×64
    save_image(tmp_path / "small.png", torch.rand(3, 16, 16))
    code, _, err = run(capsys, "solve", tmp_path / "small.png", "--solver", "ddnm", "--prior", prior, "--steps", "2",
                       "-o", "sr4", "--out", tmp_path / "out")
    assert code == 2 and "this one is 64×64" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
