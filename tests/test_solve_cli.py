"""`restore solve` end to end with the pinv baseline (no network), plain-image inputs, resumability and errors."""

import json
from pathlib import Path

import torch

from restore.cli import main
from restore.io import load_image, save_image

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def test_solve_measurements_writes_images_and_sidecars_and_resumes(tmp_path, capsys):
    assert run(capsys, "degrade", SAMPLES / "astronaut_face64.png", "-o", "sr4", "--noise", "0.01",
               "--out", tmp_path / "m")[0] == 0
    code, out, err = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--out", tmp_path / "r")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "r" / "astronaut_face64.json").read_text())
    assert sidecar["operator"].startswith("sr:factor=4") and sidecar["noise"] == "gaussian:0.01"
    assert sidecar["metrics"]["psnr"] > 20 and 0 < sidecar["metrics"]["ssim"] <= 1
    assert {"restore", "torch", "numpy"} <= set(sidecar["versions"]) and sidecar["cost"]["operator_evals"] == 1
    restored = load_image(tmp_path / "r" / "astronaut_face64.png")
    assert restored.shape == (3, 64, 64)
    before = (tmp_path / "r" / "astronaut_face64.json").read_bytes()
    code, out, _ = run(capsys, "solve", tmp_path / "m", "--solver", "pinv", "--out", tmp_path / "r")
    assert code == 0 and "skipped" in out
    assert (tmp_path / "r" / "astronaut_face64.json").read_bytes() == before


def test_plain_low_resolution_image_with_operator(tmp_path, capsys):
    save_image(tmp_path / "small.png", torch.rand(3, 16, 12))
    code, _, err = run(capsys, "solve", tmp_path / "small.png", "--solver", "pinv", "--operator", "sr4",
                       "--out", tmp_path / "r")
    assert code == 0, err
    assert load_image(tmp_path / "r" / "small.png").shape == (3, 64, 48)


def test_plain_masked_image_with_mask_file(tmp_path, capsys):
    save_image(tmp_path / "photo.png", torch.rand(3, 20, 20))
    mask = torch.ones(1, 20, 20)
    mask[:, 5:10, 5:10] = 0
    save_image(tmp_path / "mask.png", mask)
    code, _, err = run(capsys, "solve", tmp_path / "photo.png", "--solver", "pinv", "--mask", tmp_path / "mask.png",
                       "--out", tmp_path / "r")
    assert code == 0, err
    restored = load_image(tmp_path / "r" / "photo.png")
    assert float(restored[:, 5:10, 5:10].abs().max()) == 0.0  # A⁺ leaves the hole empty


def test_solve_errors(tmp_path, capsys):
    save_image(tmp_path / "a.png", torch.rand(3, 16, 16))
    cases = [
        (["solve", tmp_path / "a.png", "--solver", "pinv", "--out", tmp_path / "r"], "is a plain image"),
        (["solve", tmp_path / "a.png", "--solver", "magic", "-o", "denoise", "--out", tmp_path / "r"],
         "unknown solver 'magic'"),
        (["solve", tmp_path / "missing.png", "--solver", "pinv", "-o", "sr4", "--out", tmp_path / "r"],
         "does not exist"),
        (["solve", tmp_path / "a.png", "--solver", "pinv", "-o", "ct:views=10", "--out", tmp_path / "r"],
         "sinogram has 16 views"),
        (["solve", tmp_path / "a.png", "--solver", "pinv", "--mask", tmp_path / "nomask.png", "--out",
          tmp_path / "r"], "mask file"),
        (["solve", tmp_path / "a.png", "--solver", "dps", "--prior", "nothing", "-o", "denoise", "--out",
          tmp_path / "r"], "unknown prior 'nothing'"),
    ]
    for args, fragment in cases:
        code, out, err = run(capsys, *args)
        assert code == 2, (args, out, err)
        assert fragment in err, (fragment, err)
        assert "Traceback" not in err


def test_measurement_file_refuses_operator_override(tmp_path, capsys):
    run(capsys, "degrade", SAMPLES / "camera.png", "-o", "denoise", "--noise", "0.1", "--out", tmp_path / "m")
    code, _, err = run(capsys, "solve", tmp_path / "m" / "camera.npz", "--solver", "pinv", "-o", "sr4",
                       "--out", tmp_path / "r")
    assert code == 2 and "carries its own operator" in err


def test_bench_report_and_shards_merge_to_the_same_rows(tmp_path, capsys):
    src = tmp_path / "clean"
    src.mkdir()
    g = torch.Generator().manual_seed(0)
    for k in range(3):
        save_image(src / f"{k}.png", torch.rand(3, 32, 32, generator=g))
    common = ["-o", "sr:factor=2;mask:kind=random,fraction=0.5", "--solver", "pinv", "--noise", "0.01",
              "--baselines", "none"]
    code, _, err = run(capsys, "bench", src, *common, "--out", tmp_path / "full")
    assert code == 0, err
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert len(full) == 3 * 2 and {r["solver"] for r in full} == {"pinv"}
    report = (tmp_path / "full" / "report.md").read_text()
    assert "| pinv | 3 |" in report and "grid_" in report
    for shard in ("0/2", "1/2"):
        assert run(capsys, "bench", src, *common, "--shard", shard, "--out", tmp_path / "parts")[0] == 0
    assert run(capsys, "bench", "merge", tmp_path / "parts", "--out", tmp_path / "merged")[0] == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    key = lambda r: (r["image"], r["operator"], r["solver"])  # noqa: E731
    assert sorted(map(key, merged)) == sorted(map(key, full))
    by_key = {key(r): r for r in full}
    for r in merged:  # same seeds per image whatever the shard: identical metrics
        assert abs(r["psnr"] - by_key[key(r)]["psnr"]) < 1e-9
    assert run(capsys, "bench", src, *common, "--shard", "2/2", "--out", tmp_path / "x")[0] == 2


def _tiny_prior_file(tmp_path):
    """A tiny random 16×16 ADM prior saved with its model card, as 'restore prior train' writes one."""
    from safetensors.torch import save_file

    from priors.base import sha256_file
    from solver_testing import tiny_unet_prior

    prior = tiny_unet_prior(channels=3, size=16)
    path = tmp_path / "tiny16.safetensors"
    save_file({k: v.contiguous() for k, v in prior.net.state_dict().items()}, str(path))
    card = prior.card
    card.architecture = {"kind": "adm", **prior.net.cfg.to_dict()}
    card.sha256 = sha256_file(path)
    path.with_suffix(".json").write_text(json.dumps(card.to_dict()))
    return path


def test_solve_with_a_diffusion_solver_records_prior_and_cost(tmp_path, capsys):
    prior = _tiny_prior_file(tmp_path)
    save_image(tmp_path / "clean.png", torch.rand(3, 16, 16))
    assert run(capsys, "degrade", tmp_path / "clean.png", "-o", "sr:factor=2", "--out", tmp_path / "m")[0] == 0
    code, _, err = run(capsys, "solve", tmp_path / "m", "--solver", "ddnm", "--prior", prior, "--steps", "5",
                       "--samples", "2", "--out", tmp_path / "r")
    assert code == 0, err
    side = json.loads((tmp_path / "r" / "clean.json").read_text())
    assert side["prior"]["sha256"] == json.loads(prior.with_suffix(".json").read_text())["sha256"]
    assert side["cost"]["nfe"] == 2 * 5 and side["samples"] == 2 and side["params"]["steps"] == 5
    assert (tmp_path / "r" / "clean_std.png").is_file()


def test_impossible_combinations_are_refused_before_any_work(tmp_path, capsys):
    prior = _tiny_prior_file(tmp_path)
    save_image(tmp_path / "clean.png", torch.rand(3, 16, 16))
    run(capsys, "degrade", tmp_path / "clean.png", "-o", "phase-retrieval", "--out", tmp_path / "pr")
    code, _, err = run(capsys, "solve", tmp_path / "pr", "--solver", "ddnm", "--prior", prior, "--out", tmp_path / "r")
    assert code == 2 and "needs a linear operator" in err and "dps or daps" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    save_image(tmp_path / "big.png", torch.rand(3, 32, 32))
    run(capsys, "degrade", tmp_path / "big.png", "-o", "denoise", "--out", tmp_path / "big")
    code, _, err = run(capsys, "solve", tmp_path / "big", "--solver", "ddnm", "--prior", prior, "--out", tmp_path / "r")
    assert code == 2 and "restores 16×16 images but this one is 32×32" in err


def test_grey_image_restored_with_an_rgb_prior(tmp_path, capsys):
    prior = _tiny_prior_file(tmp_path)  # RGB, 16×16
    save_image(tmp_path / "grey.png", torch.rand(1, 16, 16))
    run(capsys, "degrade", tmp_path / "grey.png", "-o", "mask:kind=random,fraction=0.5", "--out", tmp_path / "m")
    code, _, err = run(capsys, "solve", tmp_path / "m", "--solver", "ddnm", "--prior", prior, "--steps", "3",
                       "--out", tmp_path / "r")
    assert code == 0, err
    assert load_image(tmp_path / "r" / "grey.png").shape == (1, 16, 16)
    side = json.loads((tmp_path / "r" / "grey.json").read_text())
    assert "replicated to RGB" in side["channels"] and side["metrics"]["psnr"] > 0
    # a channel mismatch on an operator that mixes pixels across channels is still refused
    save_image(tmp_path / "g2.png", torch.rand(1, 16, 16))
    run(capsys, "degrade", tmp_path / "g2.png", "-o", "phase-retrieval", "--out", tmp_path / "m2")
    code, _, err = run(capsys, "solve", tmp_path / "m2", "--solver", "dps", "--steps", "2", "--prior", prior,
                       "--out", tmp_path / "r2")
    assert code == 2 and "1-channel images" in err


def test_param_sets_one_solver_parameter_and_bad_ones_are_refused(tmp_path, capsys):
    prior = _tiny_prior_file(tmp_path)
    save_image(tmp_path / "clean.png", torch.rand(3, 16, 16))
    assert run(capsys, "degrade", tmp_path / "clean.png", "-o", "sr:factor=2", "--out", tmp_path / "m")[0] == 0
    code, _, err = run(capsys, "solve", tmp_path / "m", "--solver", "ddnm", "--prior", prior, "--steps", "3",
                       "--param", "eta=0.5", "--param", "travel_length=1", "--out", tmp_path / "r")
    assert code == 0, err
    side = json.loads((tmp_path / "r" / "clean.json").read_text())
    assert side["params"]["eta"] == 0.5 and side["params"]["steps"] == 3
    for bad, fragment in [("eta", "KEY=VALUE"), ("nothing=1", "no parameter 'nothing'"),
                          ("eta=fast", "like 0.85 (float)"), ("steps=2.5", "like 100 (int)")]:
        code, _, err = run(capsys, "solve", tmp_path / "m", "--solver", "ddnm", "--prior", prior, "--param", bad,
                           "--out", tmp_path / "r2")
        assert code == 2 and fragment in err and "Traceback" not in err, (bad, err)
        assert not (tmp_path / "r2").exists()
