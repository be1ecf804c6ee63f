"""Trust: restore never loses or overwrites a user's file, and bad input ends in one sentence (exit 2), never a
traceback. Each test runs the real command line (``restore.cli.main``) with the pinv solver or a tiny random prior.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore.cli import main
from restore.io import load_image, save_image

pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def photos(folder: Path, names=("a.png", "b.png"), size=16, seed=0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for name in names:
        save_image(folder / name, torch.rand(3, size, size, generator=g))


def pinv(*extra):
    return ["solve", *extra, "--solver", "pinv", "-o", "denoise", "--noise", "0.01"]


# ------------------------------------------------------------------------------------------------------------------
# 1. data safety


def test_out_equal_to_the_input_folder_never_overwrites_the_originals(tmp_path, capsys):
    photos(tmp_path / "photos")
    before = snapshot(tmp_path / "photos")
    code, out, err = run(capsys, *pinv(tmp_path / "photos", "--out", tmp_path / "photos"))
    assert code == 2 and "Traceback" not in out + err
    assert "is an input of this run" in err and "a.png" in err
    assert snapshot(tmp_path / "photos") == before
    # --overwrite does not change that: it only redoes restore's own outputs
    code, _, err = run(capsys, *pinv(tmp_path / "photos", "--out", tmp_path / "photos", "--overwrite"))
    assert code == 2 and snapshot(tmp_path / "photos") == before


def test_out_dot_beside_a_single_photo_is_refused(tmp_path, capsys, monkeypatch):
    photos(tmp_path, names=("photo.png",))
    before = (tmp_path / "photo.png").read_bytes()
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *pinv("photo.png", "--out", "."))
    assert code == 2 and "is an input of this run" in err
    assert (tmp_path / "photo.png").read_bytes() == before
    # a JPEG input writes a PNG beside it: a new file, the original untouched
    Image.open(tmp_path / "photo.png").convert("RGB").save(tmp_path / "shot.jpg", quality=95)
    jpg = (tmp_path / "shot.jpg").read_bytes()
    code, _, err = run(capsys, *pinv("shot.jpg", "--out", "."))
    assert code == 0, err
    assert (tmp_path / "shot.jpg").read_bytes() == jpg and (tmp_path / "shot.png").is_file()


def test_a_file_restore_did_not_write_is_never_replaced(tmp_path, capsys):
    photos(tmp_path / "in", names=("a.png",))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"the user's own file")
    for extra in ([], ["--overwrite"]):
        code, _, err = run(capsys, *pinv(tmp_path / "in", "--out", tmp_path / "out", *extra))
        assert code == 2 and "exists and was not written by restore" in err and "a.png" in err
        assert (tmp_path / "out" / "a.png").read_bytes() == b"the user's own file"
    # nor a JSON of the user's where the sidecar would go
    (tmp_path / "out" / "a.png").unlink()
    (tmp_path / "out" / "a.json").write_text('{"mine": 1}')
    code, _, err = run(capsys, *pinv(tmp_path / "in", "--out", tmp_path / "out"))
    assert code == 2 and "a.json" in err and json.loads((tmp_path / "out" / "a.json").read_text()) == {"mine": 1}


def test_overwrite_redoes_restores_own_outputs_and_the_skip_is_said_in_words(tmp_path, capsys):
    photos(tmp_path / "in", names=("a.png",))
    code, _, _ = run(capsys, *pinv(tmp_path / "in", "--out", tmp_path / "out"))
    assert code == 0
    side = json.loads((tmp_path / "out" / "a.json").read_text())
    assert side["written_by"] == "restore"
    code, out, _ = run(capsys, *pinv(tmp_path / "in", "--out", tmp_path / "out"))
    assert code == 0 and "skipped: done by an earlier run" in " ".join(out.split())
    code, out, _ = run(capsys, *pinv(tmp_path / "in", "--out", tmp_path / "out", "--overwrite"))
    assert code == 0 and "written" in out


def test_same_stem_different_extensions_get_distinct_outputs(tmp_path, capsys):
    folder = tmp_path / "in"
    photos(folder, names=("a.png",))
    Image.fromarray((np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)).save(folder / "a.jpg")
    code, _, err = run(capsys, *pinv(folder, "--out", tmp_path / "out"))
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.jpg.json", "a.jpg.png", "a.png.json", "a.png.png"]
    assert json.loads((tmp_path / "out" / "a.jpg.json").read_text())["input"].endswith("a.jpg")
    # restore degrade makes both measurements too
    code, _, err = run(capsys, "degrade", folder, "-o", "sr4", "--out", tmp_path / "meas")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "meas").glob("*.npz")) == ["a.jpg.npz", "a.png.npz"]


def test_out_inside_the_input_folder_is_never_read_back(tmp_path, capsys):
    folder = tmp_path / "photos"
    photos(folder)
    for _ in range(3):
        code, out, err = run(capsys, *pinv(folder, "--out", folder / "out"))
        assert code == 0, err
    assert not (folder / "out" / "out").exists()
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["a.json", "a.png", "b.json", "b.png"]
    # outputs written straight into the input folder (JPEG inputs) are recognised by their sidecars
    jfolder = tmp_path / "jpegs"
    jfolder.mkdir()
    for name in ("x", "y"):
        Image.fromarray((np.random.default_rng(2).random((16, 16, 3)) * 255).astype(np.uint8)).save(jfolder / f"{name}.jpg")
    for _ in range(2):
        code, out, err = run(capsys, *pinv(jfolder, "--out", jfolder))
        assert code == 0, err
    assert sorted(p.name for p in jfolder.iterdir()) == ["x.jpg", "x.json", "x.png", "y.jpg", "y.json", "y.png"]


def test_degrade_never_overwrites_a_foreign_npz_or_its_input(tmp_path, capsys):
    photos(tmp_path / "in", names=("a.png",))
    (tmp_path / "meas").mkdir()
    np.savez(tmp_path / "meas" / "a.npz", data=np.zeros(3))
    before = (tmp_path / "meas" / "a.npz").read_bytes()
    code, _, err = run(capsys, "degrade", tmp_path / "in", "-o", "sr4", "--out", tmp_path / "meas", "--overwrite")
    assert code == 2 and "was not written by restore" in err
    assert (tmp_path / "meas" / "a.npz").read_bytes() == before
    # an .npz input beside a PNG of the same name is not a target of degrade (npz inputs are skipped)
    code, _, err = run(capsys, "degrade", tmp_path / "in", "-o", "sr4", "--out", tmp_path / "in")
    assert code == 0, err
    before = snapshot(tmp_path / "in")
    code, out, _ = run(capsys, "degrade", tmp_path / "in", "-o", "sr4", "--out", tmp_path / "in")
    assert code == 0 and "skipped" in out and snapshot(tmp_path / "in") == before


def test_the_mask_file_and_the_reference_are_protected_too(tmp_path, capsys):
    photos(tmp_path / "in", names=("a.png",))
    mask = tmp_path / "in" / "holes.png"
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    before = mask.read_bytes()
    code, _, err = run(capsys, "solve", tmp_path / "in" / "a.png", "--mask", mask, "--solver", "pinv", "--out",
                       tmp_path / "out", "--reference", tmp_path / "in" / "a.png")
    assert code == 0, err
    # the mask as an input and as the mask: refused, untouched
    code, _, err = run(capsys, "solve", mask, "--mask", mask, "--solver", "pinv", "--out", tmp_path / "in")
    assert code == 2 and mask.read_bytes() == before
