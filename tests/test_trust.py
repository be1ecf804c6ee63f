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


def test_resuming_with_other_settings_is_refused_not_mixed_in(tmp_path, capsys):
    photos(tmp_path / "in", names=("a.png", "b.png"))
    ddnm = ["solve", tmp_path / "in", "--out", tmp_path / "out", "--solver", "ddnm", "--prior", "natural", "-o",
            "sr:factor=2", "--noise", "0.05", "--steps", "2"]
    assert run(capsys, *ddnm)[0] == 0
    before = snapshot(tmp_path / "out")
    code, out, _ = run(capsys, *ddnm)  # the same settings: resumed, as before
    assert code == 0 and "skipped: done by an earlier run" in " ".join(out.split())
    for extra, what in [(["--steps", "3"], "steps 2 there, 3 now"), (["--noise", "0.1"], "noise"),
                        (["--equivariant", "flips"], "--equivariant 'off' there, 'flips' now"),
                        (["--param", "eta=0.5"], "eta 0.85 there, 0.5 now"), (["--seed", "7"], "seed")]:
        args = ddnm[:-2] + (["--steps", "2"] if "--steps" not in extra else []) + extra
        code, _, err = run(capsys, *args)
        assert code == 2 and "was made by an earlier run with other settings" in err and what in err, (extra, err)
        assert "--overwrite to redo it" in err
        assert snapshot(tmp_path / "out") == before  # nothing touched
    code, _, err = run(capsys, *ddnm[:4], "--solver", "pinv", *ddnm[6:-2])
    assert code == 2 and "solver 'ddnm' there, 'pinv' now" in err
    code, out, _ = run(capsys, *ddnm[:-1], "3", "--overwrite")
    assert code == 0 and json.loads((tmp_path / "out" / "a.json").read_text())["params"]["steps"] == 3


def test_an_output_of_other_prior_weights_is_refused_and_older_sidecars_still_resume(tmp_path, capsys):
    photos(tmp_path / "in", names=("a.png",))
    ddnm = ["solve", tmp_path / "in", "--out", tmp_path / "out", "--solver", "ddnm", "--prior", "natural", "-o",
            "sr:factor=2", "--noise", "0.05", "--steps", "2"]
    assert run(capsys, *ddnm)[0] == 0
    side_path = tmp_path / "out" / "a.json"
    side = json.loads(side_path.read_text())
    side["prior"]["sha256"] = "0" * 64  # as if made by the natural prior of another release
    side_path.write_text(json.dumps(side))
    code, _, err = run(capsys, *ddnm)
    assert code == 2 and "prior weights (sha256) '000000000000' there" in err
    del side["prior"]["sha256"], side["evaluation"]  # a sidecar of an older restore: no hash, no --equivariant
    side_path.write_text(json.dumps(side))
    code, out, _ = run(capsys, *ddnm)
    assert code == 0 and "skipped: done by an earlier run" in " ".join(out.split())


def test_an_output_made_before_its_preset_was_retuned_is_refused(tmp_path, capsys, monkeypatch):
    """The sidecar records the parameters as set (``preset_params``); if the same preset gives other values in this
    version (a retuned preset), the output is not resumed as if made with them. A sidecar without the record (an
    older restore) still resumes."""
    from restore.solvers.ddnm import DDNM

    photos(tmp_path / "in", names=("a.png",))
    ddnm = ["solve", tmp_path / "in", "--out", tmp_path / "out", "--solver", "ddnm", "--prior", "natural", "-o",
            "sr:factor=2", "--noise", "0.05", "--steps", "2"]
    assert run(capsys, *ddnm)[0] == 0
    side_path = tmp_path / "out" / "a.json"
    side = json.loads(side_path.read_text())
    preset = side["preset"]
    assert side["preset_params"]["eta"] == DDNM(preset=preset or None).params["eta"]
    before = snapshot(tmp_path / "out")
    retuned = {**DDNM.presets, preset: {**DDNM.presets.get(preset, {}), "eta": 0.5}}
    monkeypatch.setattr(DDNM, "presets", retuned)
    code, _, err = run(capsys, *ddnm)
    assert code == 2 and "parameter eta 0.85 there, 0.5 now" in " ".join(err.split()), err
    assert snapshot(tmp_path / "out") == before
    monkeypatch.undo()
    code, _, err = run(capsys, *ddnm[:-2])  # made with --steps 2, resumed without it: not passed off either
    assert code == 2 and "parameter steps 2 there, 100 now" in " ".join(err.split()), err
    monkeypatch.setattr(DDNM, "presets", retuned)
    del side["preset_params"]
    side_path.write_text(json.dumps(side))
    code, out, _ = run(capsys, *ddnm)
    assert code == 0 and "skipped: done by an earlier run" in " ".join(out.split())


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


# ------------------------------------------------------------------------------------------------------------------
# 2. inputs


def _rgb(h=16, w=16, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    rgb = _rgb(32, 32)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    x = load_image(tmp_path / "c.jpg")
    ref = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert x.shape == (3, 32, 32)
    assert float((x - ref).abs().mean()) < 0.03  # JPEG round-off; inverted colours would be ~0.5 away


@pytest.mark.parametrize("mode", ["P", "LA", "1", "YCbCr", "RGBA", "I;16", "F", "CMYK"])
def test_every_pil_mode_is_converted_by_its_meaning(mode):
    from restore.io import pil_to_array, to_tensor

    rgb = Image.fromarray(_rgb(8, 8))
    grey = rgb.convert("L")
    if mode == "I;16":
        im = Image.fromarray((np.asarray(grey).astype(np.uint16) * 257))
        expect = np.asarray(grey) / 255.0
    elif mode == "F":
        im = Image.fromarray(np.asarray(grey).astype(np.float32) / 255.0, mode="F")
        expect = np.asarray(grey) / 255.0
    else:
        im = (grey if mode in ("LA", "1") else rgb).convert(mode)
        expect = np.asarray(im.convert("L" if mode in ("LA", "1") else "RGB")) / 255.0
    arr, _ = pil_to_array(im)
    x = to_tensor(arr).numpy()
    expect = expect[None] if expect.ndim == 2 else np.moveaxis(expect, -1, 0)
    assert x.shape == expect.shape and np.abs(x - expect).max() < 2 / 255


def test_animated_image_gives_its_first_frame_with_a_note(tmp_path, capsys):
    frames = [Image.fromarray(_rgb(16, 16, seed=s)) for s in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    code, out, err = run(capsys, *pinv(tmp_path / "anim.gif", "--out", tmp_path / "out"))
    assert code == 0, err
    side = json.loads((tmp_path / "out" / "anim.json").read_text())
    assert any("first of its 3 frames" in w for w in side["warnings"])
    assert "first of its 3 frames" in " ".join((out + err).split())


@pytest.mark.parametrize("maker, fragment", [
    (lambda p: np.save(p / "big.npy", np.linspace(0, 1000, 3 * 16 * 16).reshape(3, 16, 16).astype(np.float32)),
     "values from 0 to 1000"),
    (lambda p: np.save(p / "neg.npy", -np.ones((16, 16), np.float32)), "values from -1 to -1"),
])
def test_float_images_far_outside_0_1_are_refused(tmp_path, capsys, maker, fragment):
    maker(tmp_path)
    name = next(tmp_path.glob("*.npy"))
    code, out, err = run(capsys, *pinv(name, "--out", tmp_path / "out"))
    assert code == 2 and fragment in err and "Traceback" not in out + err


def test_mask_with_values_outside_0_1_is_refused(tmp_path, capsys):
    photos(tmp_path, names=("a.png",))
    np.save(tmp_path / "m.npy", np.full((16, 16), 7.0))
    code, _, err = run(capsys, "solve", tmp_path / "a.png", "--mask", tmp_path / "m.npy", "--solver", "pinv",
                       "--out", tmp_path / "out")
    assert code == 2 and "values from 7 to 7" in err and "0 (missing) and 1 (observed)" in err


@pytest.mark.parametrize("flag, value, fragment", [
    ("--batch-size", "0", "--batch-size must be at least 1"),
    ("--batch-size", "-3", "--batch-size must be at least 1"),
    ("--samples", "100000000", "--samples must be between 1 and 1000"),
    ("--samples", "0", "--samples must be between 1 and 1000"),
    ("--steps", "0", "--steps must be at least 1"),
])
def test_counts_that_cannot_be_meant_are_refused(tmp_path, capsys, flag, value, fragment):
    photos(tmp_path / "in", names=("a.png",))
    code, out, err = run(capsys, *pinv(tmp_path / "in", "--out", tmp_path / "out", flag, value))
    assert code == 2 and fragment in err and "Traceback" not in out + err
    assert not (tmp_path / "out").exists()


def _tiny_prior(folder: Path, size: int = 16, any_size: bool = False, train_size: int = 0) -> Path:
    from safetensors.torch import save_file

    from solver_testing import tiny_unet_prior

    prior = tiny_unet_prior(channels=3, size=size)
    path = folder / f"tiny{size}.safetensors"
    save_file({k: v.contiguous() for k, v in prior.net.state_dict().items()}, str(path))
    card = prior.card
    card.architecture = {"kind": "adm", **prior.net.cfg.to_dict()}
    if any_size:
        card.extra.update(any_size=True, train_size=train_size or size)
    path.with_suffix(".json").write_text(json.dumps(card.to_dict()))
    return path


def test_any_size_prior_takes_sizes_the_network_does_not_divide(tmp_path, capsys):
    prior = _tiny_prior(tmp_path, any_size=True)  # two levels: sides must be even for the network
    save_image(tmp_path / "odd.png", torch.rand(3, 25, 19))
    code, out, err = run(capsys, "solve", tmp_path / "odd.png", "--solver", "ddnm", "--steps", "2", "--prior", prior,
                         "-o", "denoise", "--noise", "0.05", "--out", tmp_path / "out")
    assert code == 0, err
    assert load_image(tmp_path / "out" / "odd.png").shape == (3, 25, 19)
    # too small to restore: one sentence
    save_image(tmp_path / "dot.png", torch.rand(3, 1, 1))
    code, out, err = run(capsys, "solve", tmp_path / "dot.png", "--solver", "ddnm", "--steps", "2", "--prior", prior,
                         "-o", "denoise", "--out", tmp_path / "out2")
    assert code == 2 and "smaller than the 8×8" in err


def test_padding_equals_the_network_on_a_reflect_padded_input():
    """The padded evaluation is exactly the network on the reflect-padded image, cropped back."""
    import torch.nn.functional as F

    from solver_testing import tiny_unet_prior

    prior = tiny_unet_prior(size=16)
    x, t = torch.randn(1, 3, 15, 13), torch.tensor([300.0])
    with torch.no_grad():
        got, _ = prior.model_output(x, t)
        ref = prior.net(F.pad(x, (0, 1, 0, 1), mode="reflect"), t)[..., :15, :13]
    assert got.shape == x.shape and torch.equal(got, ref)


@pytest.mark.parametrize("mode, size, out_shape", [("pad", (12, 10), (12, 10)), ("crop", (24, 20), (16, 16)),
                                                    ("resize", (40, 36), (40, 36))])
def test_fit_fits_a_plain_image_to_a_fixed_size_prior(tmp_path, capsys, mode, size, out_shape):
    prior = _tiny_prior(tmp_path)
    clean = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    save_image(tmp_path / "x.png", clean)
    args = ["solve", tmp_path / "x.png", "--solver", "ddnm", "--steps", "2", "--prior", prior, "-o", "denoise",
            "--noise", "0.05", "--out", tmp_path / "out"]
    code, _, err = run(capsys, *args)
    assert code == 2 and "--fit pad, crop or resize" in err and "natural" in err
    code, _, err = run(capsys, *args, "--fit", mode, "--reference", tmp_path / "x.png")
    assert code == 0, err
    assert load_image(tmp_path / "out" / "x.png").shape == (3, *out_shape)
    side = json.loads((tmp_path / "out" / "x.json").read_text())
    assert side["fit"]["mode"] == mode and side["fit"]["fitted_shape"] == [3, 16, 16] and side["metrics"]["psnr"] > 0


def test_fit_refusals_name_what_works(tmp_path, capsys):
    prior = _tiny_prior(tmp_path)
    save_image(tmp_path / "x.png", torch.rand(3, 24, 24))
    base = ["solve", tmp_path / "x.png", "--solver", "ddnm", "--steps", "2", "--prior", prior, "--out", tmp_path / "o"]
    code, _, err = run(capsys, *base, "-o", "deblur-gauss", "--fit", "resize")
    assert code == 2 and "blur kernel's scale" in err and "--fit pad or crop" in err
    code, _, err = run(capsys, *base, "-o", "denoise", "--fit", "pad")
    assert code == 2 and "use --fit crop or resize" in err
    code, _, err = run(capsys, *base, "-o", "denoise", "--fit", "squeeze")
    assert code == 2 and "--fit must be pad, crop or resize" in err


def test_a_slice_at_a_scale_the_prior_never_saw_is_said(tmp_path, capsys):
    prior = _tiny_prior(tmp_path, size=32, any_size=True, train_size=16)  # like ct: 32² slices, 16² crops
    save_image(tmp_path / "big.png", torch.rand(3, 96, 96))
    args = ["solve", tmp_path / "big.png", "--solver", "ddnm", "--steps", "2", "--prior", prior, "-o", "denoise",
            "--noise", "0.05"]
    code, out, err = run(capsys, *args, "--out", tmp_path / "out")
    assert code == 0, err
    said = " ".join((out + err).split())
    assert "trained on 32×32 images but this one is 96×96" in said
    assert "never saw" in json.loads((tmp_path / "out" / "big.json").read_text())["warnings"][0]
    code, out, err = run(capsys, *args, "--fit", "resize", "--out", tmp_path / "out2")
    assert code == 0, err
    side = json.loads((tmp_path / "out2" / "big.json").read_text())
    assert side["fit"]["fitted_shape"] == [3, 32, 32] and not any("never saw" in w for w in side["warnings"])
    assert load_image(tmp_path / "out2" / "big.png").shape == (3, 96, 96)


def test_a_run_that_cannot_fit_in_memory_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import restore.resources as resources

    monkeypatch.setattr(resources, "memory_free", lambda device: 50 * 2**20)
    save_image(tmp_path / "big.png", torch.rand(3, 256, 256))
    args = ["solve", tmp_path / "big.png", "--solver", "ddnm", "--prior", "natural", "-o", "denoise", "--noise",
            "0.05", "--steps", "1", "--out", tmp_path / "out"]
    code, out, err = run(capsys, *args)
    assert code == 2 and "needs about" in err and "50 MB is free" in err and "--no-memory-check" in err
    assert not (tmp_path / "out").exists()
    # the estimate is what the issue saw for pinv on a 10,000² photo (more than 8 GB), and the override runs
    from priors.registry import card_of

    assert resources.memory_needed((3, 10_000, 10_000), 1, None, "pinv") > 8 * 2**30
    assert resources.memory_needed((3, 512, 512), 1, card_of("natural"), "dps") > \
        resources.memory_needed((3, 512, 512), 1, card_of("natural"), "ddnm")
    code, out, err = run(capsys, *args, "--no-memory-check")
    assert code == 0, err


def test_a_long_run_says_its_estimated_time_first(tmp_path, capsys, monkeypatch):
    import restore.solve as rsolve

    monkeypatch.setattr(rsolve, "ANNOUNCE_SECONDS", 0.0)
    photos(tmp_path / "in", names=("a.png", "b.png"), size=32)
    code, out, err = run(capsys, "solve", tmp_path / "in", "--solver", "ddnm", "--prior", "natural", "-o", "denoise",
                         "--noise", "0.05", "--steps", "3", "--out", tmp_path / "out", "--threads", "1")
    assert code == 0, err
    assert "estimated time: about" in " ".join(out.split()) and "for 2 images" in " ".join(out.split())


# ------------------------------------------------------------------------------------------------------------------
# 4. first-minute usability


@pytest.mark.parametrize("argv", [["--help"], ["list", "priors"], ["prior", "show", "natural"], ["solve", "--help"]])
def test_help_and_listing_priors_do_not_load_torch(argv):
    """`restore --help` and `restore list priors` answer without importing torch (2–3 s of the 3–6.5 s they took);
    the timing itself is measured by benchmarks/cli_startup.py, not here."""
    import subprocess
    import sys

    code = ("import sys; from restore.cli import main; rc = main(%r); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)" % (argv,))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("NO-TORCH")


# ------------------------------------------------------------------------------------------------------------------
# complex MRI data, end to end


def _complex_phantom(n: int = 64) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    mag = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    return (mag * np.exp(1j * (1.2 * xx - 0.7 * yy + 0.5))).astype(np.complex64)


def test_complex_mri_image_degrades_and_solves_for_its_magnitude(tmp_path, capsys):
    import warnings

    z = _complex_phantom()
    np.save(tmp_path / "slice.npy", z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy ComplexWarning: the imaginary part is never dropped silently
        assert torch.allclose(load_image(tmp_path / "slice.npy")[0], torch.from_numpy(np.abs(z)), atol=1e-6)
        code, _, err = run(capsys, "degrade", tmp_path / "slice.npy", "-o", "mri:accel=4,center=0.16",
                           "--noise", "0.001", "--out", tmp_path / "meas")
    assert code == 0, err
    from restore.io import load_measurement

    m = load_measurement(tmp_path / "meas" / "slice.npz")
    assert "complex=true" in m.spec and m.y.is_complex()
    # the classical answer, the magnitude of the zero-filled image, as the yardstick
    from restore.metrics import psnr

    from operators.simple import ifft2c

    truth = torch.from_numpy(np.abs(z))[None]
    scores = {"zero-filled": psnr(ifft2c(m.y[0]).abs().clamp(0, 1), truth)}
    for solver, extra in (("pinv", []), ("dps", ["--steps", "20"])):
        code, out, err = run(capsys, "solve", tmp_path / "meas", "--solver", solver, "--prior", "brain-mri",
                             *extra, "--out", tmp_path / solver)
        assert code == 0, err
        side = json.loads((tmp_path / solver / "slice.json").read_text())
        assert any("magnitude" in w for w in side["warnings"]) and side["operator"].endswith("phase=true")
        assert load_image(tmp_path / solver / "slice.png").shape == (1, 64, 64)
        scores[solver] = side["metrics"]["psnr"]
    # the phase-aware least squares is as good as the magnitude of the zero-filled image, the classical answer
    assert scores["pinv"] > scores["zero-filled"] - 0.5 and scores["pinv"] > 20, scores
    assert np.isfinite(scores["dps"]), scores
    # DDNM needs an SVD, which the phase-corrected operator has not: one sentence
    code, _, err = run(capsys, "solve", tmp_path / "meas", "--solver", "ddnm", "--prior", "brain-mri", "--out",
                       tmp_path / "ddnm")
    assert code == 2 and "ddnm" in err


def test_complex_image_given_as_k_space_is_refused_and_real_k_space_too(tmp_path, capsys):
    np.save(tmp_path / "img.npy", _complex_phantom(32))
    code, out, err = run(capsys, "solve", tmp_path / "img.npy", "--solver", "pinv", "-o", "mri-4x", "--out",
                         tmp_path / "o")
    assert code == 2 and "holds a complex image, not undersampled k-space" in err and "restore degrade" in err
    np.save(tmp_path / "real.npy", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    code, out, err = run(capsys, "solve", tmp_path / "real.npy", "--solver", "pinv", "-o", "mri-4x", "--out",
                         tmp_path / "o")
    assert code == 2 and "MRI k-space is complex" in err
    code, out, err = run(capsys, "degrade", tmp_path / "img.npy", "-o", "sr4", "--out", tmp_path / "m")
    assert code == 2 and "only the mri operator measures complex images" in err


def test_plain_k_space_of_a_complex_object_is_detected(tmp_path, capsys):
    import operators
    from operators.mri import is_hermitian
    from restore.degrade import image_seed

    z = torch.from_numpy(_complex_phantom(32))[None, None]
    spec = "mri:accel=4,center=0.16"
    op_real = operators.build(spec, (1, 32, 32), seeds=[image_seed(0, "k.npy")])
    op_cplx = operators.build(spec + ",complex=true", (1, 32, 32), seeds=[image_seed(0, "k.npy")])
    assert is_hermitian(op_real.A(z.abs()), op_real.mask) and not is_hermitian(op_cplx.A(z), op_cplx.mask)
    np.save(tmp_path / "k.npy", op_cplx.A(z)[0].numpy())
    code, out, err = run(capsys, "solve", tmp_path / "k.npy", "--solver", "pinv", "-o", spec, "--out", tmp_path / "o")
    assert code == 0, err
    assert "magnitude" in " ".join(json.loads((tmp_path / "o" / "k.json").read_text())["warnings"])


def test_ct_content_outside_a_circle_operator_is_said_at_degrade_and_in_the_sidecar(tmp_path, capsys):
    img = torch.zeros(1, 32, 32)
    img[:, :4, :] = 0.8  # a scanner table along the top edge: outside the inscribed circle
    img[:, 10:22, 10:22] = 0.5
    save_image(tmp_path / "slice.png", img)
    code, out, err = run(capsys, "degrade", tmp_path / "slice.png", "-o", "ct:views=20,circle=true", "--out",
                         tmp_path / "m")
    assert code == 0, err
    assert "outside" in err and "circle" in err
    code, out, err = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--out", tmp_path / "o")
    assert code == 0, err
    assert any("circle" in w for w in json.loads((tmp_path / "o" / "slice.json").read_text())["warnings"])
    # the default (whole square) keeps the corners: nothing to say
    code, out, err = run(capsys, "degrade", tmp_path / "slice.png", "-o", "ct:views=20", "--out", tmp_path / "m2")
    assert code == 0 and "circle" not in err


def test_phase_operator_adjoint_and_exactness_with_a_real_phase_map():
    """mri phase=true: y = M ⊙ F(e^{iφ}·x) for a real x; ⟨A x, y⟩ = ⟨x, Aᴴ y⟩ (real inner product), and with the true
    phase map it reproduces the complex operator on |x|·e^{iφ} exactly."""
    import operators
    from operators import inner

    z = torch.from_numpy(_complex_phantom(32))[None, None]
    phase = torch.exp(1j * torch.angle(z)).to(torch.complex64)
    cplx = operators.build("mri:accel=4,center=0.16,complex=true", (1, 32, 32), seeds=[0])
    op = operators.build("mri:accel=4,center=0.16,phase=true", (1, 32, 32), seeds=[0],
                         state={"mask": cplx.mask, "coil_maps": phase[:, :1]})
    assert torch.allclose(op.A(z.abs()), cplx.A(z), atol=1e-5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 32, 32, generator=g)
    v = torch.complex(torch.rand(1, 1, 32, 32, generator=g), torch.rand(1, 1, 32, 32, generator=g))
    assert torch.allclose(inner(op.A(x), v), inner(x, op.A_adjoint(v)), rtol=1e-4)
    assert op.A_adjoint(v).dtype == torch.float32


def test_a_hard_link_to_an_input_is_an_input(tmp_path, capsys):
    photos(tmp_path / "in", names=("a.png",))
    (tmp_path / "out").mkdir()
    os.link(tmp_path / "in" / "a.png", tmp_path / "out" / "a.png")  # the same file under the output's name
    before = (tmp_path / "in" / "a.png").read_bytes()
    code, _, err = run(capsys, *pinv(tmp_path / "in", "--out", tmp_path / "out", "--overwrite"))
    assert code == 2 and "is an input of this run" in err
    assert (tmp_path / "in" / "a.png").read_bytes() == before
