"""How the prior's network is evaluated (restore.acceleration): overlapping tiles for large images, channels-last,
precision checks; none of it changes what a solver computes beyond float round-off, or (tiles) beyond a stated
tolerance, and the network-evaluation count stays one per batch."""

import json

import pytest
import torch

import priors
from priors.base import tile_spans, tiled
from restore import acceleration
from restore.acceleration import Acceleration, prepare
from restore.cli import main
from restore.errors import RestoreError
from restore.io import load_image, save_image

CPU = torch.device("cpu")


@pytest.mark.parametrize("n,tile,overlap,multiple", [(100, 100, 8, 1), (257, 128, 16, 8), (1000, 96, 16, 8),
                                                       (130, 64, 32, 1), (481, 128, 32, 8)])
def test_tiles_cover_the_side_with_at_least_the_overlap(n, tile, overlap, multiple):
    starts, length = tile_spans(n, tile, overlap, multiple)
    assert starts[0] == 0 and starts[-1] + length == n
    assert length <= tile + multiple - 1 and (length % multiple == 0 or length == n)
    for a, b in zip(starts, starts[1:]):
        assert a + length - b >= overlap  # neighbours overlap by at least `overlap`
    # the fewest tiles: one fewer could not cover the side with that overlap
    k = len(starts)
    assert k == 1 or (k - 1) * tile - (k - 2) * overlap < n


def test_blending_is_a_partition_of_unity():
    """A pixel-wise f gives exactly f(x) through the tiles (the ramp weights sum to one everywhere), also when f
    changes the number of channels."""
    x = torch.randn(2, 3, 150, 97)

    def f(z):
        return torch.cat([2 * z + 1, z.square()], dim=1)

    out = tiled(f, x, tile=48, overlap=12, multiple=8)
    torch.testing.assert_close(out, f(x), rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def natural():
    return priors.resolve("natural")


def _noisy_photo(sigma=0.1):
    from pathlib import Path

    files = sorted(Path("sample_data").rglob("*.png"))
    rgb = [f for f in files if load_image(f).shape[0] == 3 and min(load_image(f).shape[1:]) >= 160]
    if not rgb:
        pytest.skip("no RGB sample image of at least 160 pixels")
    x = load_image(rgb[0])[:, :160, :160][None]
    return x, x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))


def test_tiled_denoiser_equals_the_whole_image_one_within_tolerance_and_shows_no_seam(natural):
    """The natural prior as a denoiser (σ = 0.1) on a 160² photo, whole against 96-pixel tiles (overlap 16): the two
    agree to 35 dB PSNR (measured 36–44 dB on Kodak and CBSD68), and the difference has no step at the tile
    junctions (its mean gradient across a junction column is within 2× of the mean elsewhere)."""
    from restore.metrics import psnr

    x, y = _noisy_photo()
    with torch.no_grad():
        natural.tile = None
        whole = (natural.denoise(y * 2 - 1, 0.2) + 1) / 2
        natural.tile, natural.tile_overlap = 96, 16
        try:
            parts = (natural.denoise(y * 2 - 1, 0.2) + 1) / 2
        finally:
            natural.tile = None
    assert psnr(parts[0].clamp(0, 1), whole[0].clamp(0, 1)) > 35
    starts, length = tile_spans(160, 96, 16, natural.size_multiple)
    grad = (parts - whole).diff(dim=-1).abs().mean(dim=(0, 1, 2))       # per column boundary
    junction = [s + length - 1 for s in starts[:-1]] + [s - 1 for s in starts[1:]]
    elsewhere = torch.ones_like(grad, dtype=torch.bool)
    elsewhere[[j for j in junction if 0 <= j < len(grad)]] = False
    assert grad[junction].mean() < 2 * grad[elsewhere].mean()


def test_tiles_keep_one_network_evaluation_per_step_and_the_solver_result_close(natural):
    from operators.registry import build, measure
    from restore.solvers import get_solver, solve

    x, _ = _noisy_photo()
    op = build("sr:factor=4", x.shape[1:])
    y = measure(op, x, 0.01, [0])
    natural.tile = None
    whole = solve(get_solver("ddnm", steps=4), y, op, natural, [0], noise=0.01)
    natural.tile, natural.tile_overlap = 96, 16
    try:
        parts = solve(get_solver("ddnm", steps=4), y, op, natural, [0], noise=0.01)
    finally:
        natural.tile = None
    assert whole.cost.nfe == parts.cost.nfe == 4
    assert (parts.x - whole.x).abs().mean() < 0.02


def test_prepare_sets_channels_last_on_the_cpu_with_equal_outputs_and_tiles_only_any_size_priors(natural):
    faces = priors.resolve("faces64")
    x, t = torch.randn(1, 3, 64, 64), torch.tensor([400.0])
    with torch.no_grad():
        before = faces.model_output(x, t)[0]
        info = prepare(faces, CPU, Acceleration())
        after = faces.model_output(x, t)[0]
    assert info["channels_last"] and faces.channels_last and info["tile"] is None   # fixed-size: never tiled
    assert after.is_contiguous()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    prepare(faces, CPU, Acceleration(channels_last="off"))
    assert not faces.channels_last
    info = prepare(natural, CPU, Acceleration(tile=256, overlap=24))
    assert info["tile"] == 256 and natural.tile == 256 and natural.tile_overlap == 24
    prepare(natural, CPU, Acceleration(tile=0, channels_last="off"))
    assert natural.tile is None


def test_precision_and_tile_checks_say_what_to_do(monkeypatch, natural):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(RestoreError, match="no native bfloat16.*--precision fp32"):
        prepare(natural, CPU, Acceleration(precision="bf16"))
    with pytest.raises(RestoreError, match="tf32 is for NVIDIA GPUs"):
        prepare(natural, CPU, Acceleration(precision="tf32"))
    with pytest.raises(RestoreError, match="--precision must be one of"):
        Acceleration(precision="fp8").check()
    with pytest.raises(RestoreError, match="--tile must be 0"):
        Acceleration(tile=40).check()


def test_bf16_autocast_is_close_to_fp32_where_the_cpu_supports_it(natural):
    if not acceleration.cpu_has_native_bf16():
        pytest.skip("this CPU emulates bfloat16 (refused by prepare)")
    x, t = torch.randn(1, 3, 64, 64), torch.tensor([400.0])
    with torch.no_grad():
        natural.autocast_dtype = None
        ref = natural.model_output(x, t)[0]
        natural.autocast_dtype = torch.bfloat16
        try:
            low = natural.model_output(x, t)[0]
        finally:
            natural.autocast_dtype = None
    assert low.dtype == torch.float32 and (low - ref).abs().mean() < 0.02


def test_cli_refuses_bad_settings_and_records_the_evaluation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    img = tmp_path / "in.png"
    save_image(img, torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)))
    common = ["solve", str(img), "--operator", "sr:factor=2", "--solver", "ddnm", "--prior", "natural", "--steps",
              "2", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "a"), "--precision", "bf16"]) == 2
    assert "--precision fp32" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "b"), "--tile", "10"]) == 2
    assert "--tile must be 0" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "c")]) == 0, capsys.readouterr().err
    side = json.loads((tmp_path / "c" / "in.json").read_text())
    assert side["evaluation"] == {"channels_last": True, "tile": 1024, "tile_overlap": 32, "precision": "fp32",
                                  "compile": False}
