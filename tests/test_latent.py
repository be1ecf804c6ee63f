"""Latent priors: our small KL autoencoder and a latent ADM UNet trained a few steps, exported, and reloaded through the
registry / load path with identical outputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import priors
from priors import PriorError
from priors.adm import ADMConfig, ADMUNet
from priors.base import ldm_linear_betas, sha256_file
from priors.latent import AutoencoderConfig, LatentPrior, SmallAutoencoder, load_autoencoder
from priors.load import load_latent_prior
from priors.latent_train import train_autoencoder, train_latent_prior
from priors.train import ImageFolder, TrainConfig

AE_CFG = dict(latent_channels=3, base_channels=8, channel_mult="1,2,2", num_res_blocks=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(folder, n=12, size=16):
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):  # smooth colour gradients: something an autoencoder can learn
        a, b, c = rng.uniform(-1, 1, 3)
        img = np.stack([0.5 + 0.4 * np.sin(3 * a * xx + i), 0.5 + 0.4 * np.cos(3 * b * yy),
                        0.5 + 0.4 * c * xx * yy], -1)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _ae(tmp_path, data, steps=3, work="ae_work", out="ae_out"):
    return train_autoencoder(data, tmp_path / out, steps=steps, batch_size=4, device="cpu", name="ae", size=16,
                             config=AE_CFG, checkpoint_every=2, work_dir=str(tmp_path / work), log=lambda m: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("latent")
    data = _images(tmp / "data")
    ae_weights, ae_card = _ae(tmp, data)
    cfg = TrainConfig(data=str(data), name="lat", out=str(tmp / "out"), size=16, arch="tiny", steps=3, batch_size=4,
                      checkpoint_every=2, work_dir=str(tmp / "work"), device="cpu", fp16_weights=False,
                      domain="gradients", licence="test")
    weights, card = train_latent_prior(cfg, ae_weights, log=lambda m: None)
    return tmp, data, ae_weights, ae_card, weights, card


def test_autoencoder_shapes_and_card(trained):
    tmp, _, ae_weights, ae_card_path, _, _ = trained
    card = json.loads(ae_card_path.read_text())
    assert card["held_out_images"] == 1 and card["train_images"] == 11
    assert isinstance(card["psnr_held_out"], float) and card["scale_factor"] > 0 and card["downsample"] == 4
    assert card["sha256"] == sha256_file(ae_weights) and card["steps"] == 3
    ae, loaded_card = load_autoencoder(ae_weights)
    x = torch.rand(2, 3, 32, 48) * 2 - 1  # any size divisible by 4
    with torch.no_grad():
        mean, logvar = ae.encode_dist(x)
        assert mean.shape == logvar.shape == (2, 3, 8, 12)
        assert ae.decode(mean).shape == x.shape
    assert loaded_card["scale_factor"] == card["scale_factor"]


def test_autoencoder_resumes_exactly(trained, tmp_path):
    tmp, data, ae_weights, _, _, _ = trained
    _ae(tmp_path, data, steps=2, work="w", out="o")
    resumed, _ = _ae(tmp_path, data, steps=3, work="w", out="o")  # resumes at step 2
    assert sha256_file(resumed) == sha256_file(ae_weights)


def test_autoencoder_cosine_schedule_follows_the_closed_form_and_resumes_exactly(trained, tmp_path):
    _, data, _, _, _, _ = trained

    def run(steps, work, **kw):
        kw = dict(dict(lr_schedule="cosine", schedule_steps=6), **kw)
        return train_autoencoder(data, tmp_path / f"o{work}", steps=steps, batch_size=4, device="cpu", name="ae",
                                 size=16, config=AE_CFG, checkpoint_every=1, work_dir=str(tmp_path / work),
                                 warmup=1, log=lambda m: None, **kw)

    whole, card = run(6, "whole")
    run(3, "chunks")
    state = torch.load(tmp_path / "chunks" / "checkpoint.pt", weights_only=True)
    # the rate of the last step taken (0-based step 2): 4e-4 · ½(1 + cos(π·2/6)), not yet the end of the schedule
    assert state["opt"]["param_groups"][0]["lr"] == pytest.approx(4e-4 * 0.5 * (1 + np.cos(np.pi * 2 / 6)))
    resumed, _ = run(6, "chunks")
    assert sha256_file(resumed) == sha256_file(whole)
    assert json.loads(card.read_text())["lr_schedule"] == "cosine"
    last = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["opt"]["param_groups"][0]["lr"]
    assert last == pytest.approx(4e-4 * 0.5 * (1 + np.cos(np.pi * 5 / 6)))
    with pytest.raises(PriorError, match="learning-rate schedule cosine"):  # a constant rate cannot resume it
        run(7, "chunks", lr_schedule="constant", schedule_steps=0)
    with pytest.raises(PriorError, match="ending at step 6"):  # nor a cosine that ends elsewhere
        run(7, "chunks", schedule_steps=8)
    with pytest.raises(PriorError, match="before the 7 steps"):
        run(7, "other")
    with pytest.raises(PriorError, match="unknown learning-rate schedule"):
        run(2, "other", lr_schedule="step")


def test_latent_prior_reloads_identically_through_the_registry(trained):
    tmp, _, ae_weights, ae_card_path, weights, card_path = trained
    card = json.loads(card_path.read_text())
    ae_card = json.loads(ae_card_path.read_text())
    assert card["latent"] and card["schedule"] == "ldm-linear" and card["image_size"] == 16 and card["channels"] == 3
    assert card["extra"]["latent_shape"] == [3, 4, 4] and card["extra"]["downsample"] == 4
    assert card["extra"]["scale_factor"] == ae_card["scale_factor"]
    assert card["extra"]["autoencoder_psnr_held_out"] == ae_card["psnr_held_out"]
    assert card["sha256"] == sha256_file(weights) and card["architecture"]["kind"] == "latent"
    runs = card["extra"]["hardware_runs"]  # one chunk: steps 1..N on this machine, named as the card's hardware
    assert [(r["first"], r["last"], r["hardware"]) for r in runs] == [(1, card["extra"]["steps"], card["extra"]["hardware"])]

    prior = priors.resolve(str(weights))
    assert isinstance(prior, LatentPrior) and prior.card.latent and prior.card.domain == "gradients"
    torch.testing.assert_close(prior.alphas_cumprod, torch.cumprod(1 - ldm_linear_betas(1000), 0).float())
    # the UNet is the checkpoint's EMA, the autoencoder the exported one
    state = torch.load(tmp / "work" / "checkpoint.pt", weights_only=True)
    ema = ADMUNet(ADMConfig.from_dict(state["adm"])).eval()
    ema.load_state_dict(state["ema"])
    ae, _ = load_autoencoder(ae_weights)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = prior.encode(x)
        assert z.shape == (2, 3, 4, 4) and prior.latent_shape() == (3, 4, 4)
        assert torch.equal(z, ae.encode(x) * ae_card["scale_factor"])
        assert prior.decode(z).shape == x.shape
        assert torch.equal(prior.decode(z), ae.decode(z / ae_card["scale_factor"]))
        t = torch.tensor([3.0, 700.0])
        assert torch.equal(prior.net(z, t), ema(z, t))
        # and a second load (by the direct loader, with the hash) gives the same numbers
        again = load_latent_prior(weights, verify_hash=card["sha256"])
        assert torch.equal(again.denoise(z, 0.7), prior.denoise(z, 0.7))
        assert torch.equal(again.decode(z), prior.decode(z))
    assert priors.verify(weights)["architecture"]


def test_latent_files_are_refused_when_incomplete(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, _, _, weights, card_path = trained
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if k.startswith("net.")}, str(tmp_path / "half.safetensors"))
    (tmp_path / "half.json").write_text(card_path.read_text())
    with pytest.raises(PriorError, match="both networks"):
        priors.resolve(str(tmp_path / "half.safetensors"))
    net = ADMUNet(TrainConfig(data="", name="p", out="", size=16, arch="tiny").adm_config())
    save_file(net.state_dict(), str(tmp_path / "pix.safetensors"), metadata={"adm": json.dumps(net.cfg.to_dict())})
    with pytest.raises(PriorError, match="pixel-space prior"):
        load_latent_prior(tmp_path / "pix.safetensors")


def test_latent_training_refuses_another_autoencoder(trained, tmp_path):
    tmp, data, _, _, _, _ = trained
    other, _ = train_autoencoder(data, tmp_path / "o2", steps=1, batch_size=2, device="cpu", name="ae2", size=16,
                                 config=dict(AE_CFG, base_channels=16), work_dir=str(tmp_path / "w2"),
                                 log=lambda m: None)
    cfg = TrainConfig(data=str(data), name="lat", out=str(tmp_path / "out"), size=16, arch="tiny", steps=3,
                      batch_size=4, work_dir=str(tmp / "work"), device="cpu")
    with pytest.raises(PriorError, match="another autoencoder"):
        train_latent_prior(cfg, other, log=lambda m: None)


def test_image_folder_helpers(tmp_path):
    data = _images(tmp_path / "imgs", n=3, size=20)
    folder = ImageFolder(str(data), 16, 3, "random")
    x = folder.batch(4, torch.Generator().manual_seed(0))
    assert x.min() < -0.5 and x.max() > 0.5  # 8-bit crops are scaled by 255, not 65535
    fixed = folder.fixed()
    assert fixed.shape == (3, 3, 16, 16) and torch.equal(folder.subset([2]).fixed(), fixed[2:])
    resized = ImageFolder(str(data), 16, 3, "resize")
    assert torch.equal(resized.subset([0, 2]).fixed(), resized.fixed([0, 2]))


def test_config_and_small_autoencoder_validation():
    assert AutoencoderConfig(channel_mult=[1, 2]).channel_mult == "1,2"
    assert SmallAutoencoder(AE_CFG).downsample == 4
    with pytest.raises(ValueError):
        AutoencoderConfig(latent_channels=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        SmallAutoencoder(AE_CFG).encode(torch.zeros(1, 3, 18, 16))


def test_an_embedded_latent_prior_resolves_by_name(trained, monkeypatch):
    _, _, _, _, weights, _ = trained
    monkeypatch.setattr(priors.registry, "EMBEDDED_DIR", weights.parent)
    prior = priors.resolve("lat")  # checks the card's sha256
    assert isinstance(prior, LatentPrior) and priors.card_of("lat").latent
    z = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(prior.denoise(z, 1.5), priors.resolve(str(weights)).denoise(z, 1.5))
