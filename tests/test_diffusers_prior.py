"""diffusers folders as priors: tiny UNet2DModel / VQModel / AutoencoderKL built here, saved in the pipeline layouts,
loaded through ``priors.resolve`` and compared with calling diffusers directly."""

import json
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import priors  # noqa: E402
from priors import PriorError  # noqa: E402
from priors.latent import LatentPrior  # noqa: E402

UNET = dict(sample_size=16, block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=32,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
AE = dict(in_channels=3, out_channels=3, block_out_channels=(32, 32, 32), layers_per_block=1, norm_num_groups=32,
          down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=64)


pytestmark = pytest.mark.usefixtures("one_thread")


def _unet(in_ch=3, out_ch=3, seed=0):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(in_channels=in_ch, out_channels=out_ch, **UNET).eval()
    with torch.no_grad():  # the output conv is zero-initialised in some versions: make the test non-trivial
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return unet


def _pixel_pipeline(path, unet, **sched):
    unet.save_pretrained(path / "unet")
    diffusers.DDPMScheduler(clip_sample=False, **sched).save_pretrained(path / "scheduler")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers",
                                                       "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}))
    return diffusers.DDPMScheduler.from_pretrained(path / "scheduler")


@pytest.fixture(scope="module")
def pixel(tmp_path_factory, one_thread):
    path = tmp_path_factory.mktemp("ddpm")
    unet = _unet()
    sched = _pixel_pipeline(path, unet)
    return path, unet, sched


def test_pixel_pipeline_eps_schedule_and_views(pixel):
    path, unet, sched = pixel
    prior = priors.resolve(str(path))
    assert not prior.card.latent and prior.card.image_size == 16 and prior.card.channels == 3
    assert prior.card.schedule == "linear" and prior.card.timesteps == 1000 and prior.card.domain == "unknown"
    torch.testing.assert_close(prior.alphas_cumprod, sched.alphas_cumprod, rtol=0, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([10, 600])
    with torch.no_grad():
        eps, v = prior.model_output(x, t)
        ref = unet(x, t).sample
        assert v is None
        torch.testing.assert_close(eps, ref, rtol=0, atol=1e-6)
        # σ-space denoiser vs the VP view at integer t: x_t/√ᾱ = x₀ + σ·ε
        a = prior.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        sigma = ((1 - a) / a).sqrt().flatten()
        torch.testing.assert_close(prior.denoise(x / a.sqrt(), sigma), prior.tweedie_vp(x, t), rtol=0, atol=1e-4)
        # and the diffusers scheduler's own x̂₀
        for i in range(2):
            x0 = sched.step(ref[i:i + 1], int(t[i]), x[i:i + 1]).pred_original_sample
            torch.testing.assert_close(prior.tweedie_vp(x[i:i + 1], t[i:i + 1]), x0, rtol=0, atol=1e-4)


def test_bare_unet_folder_with_scheduler_config(pixel, tmp_path):
    path, unet, _ = pixel
    bare = tmp_path / "bare"
    shutil.copytree(path / "unet", bare)
    shutil.copy(path / "scheduler" / "scheduler_config.json", bare / "scheduler_config.json")
    prior = priors.resolve(str(bare))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(prior.net(x, torch.tensor([5.0])), unet(x, 5).sample, rtol=0, atol=1e-6)


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_v_and_sample_prediction_are_converted_to_eps(tmp_path, prediction):
    unet = _unet(seed=3)
    sched = _pixel_pipeline(tmp_path, unet, prediction_type=prediction, beta_schedule="scaled_linear",
                            beta_start=0.0015, beta_end=0.0195)
    prior = priors.resolve(str(tmp_path))
    assert prior.card.schedule == "ldm-linear" and prior.card.extra["prediction_type"] == prediction
    torch.testing.assert_close(prior.alphas_cumprod, sched.alphas_cumprod, rtol=0, atol=1e-6)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        for t in (3, 500, 990):
            x0 = sched.step(unet(x, t).sample, t, x).pred_original_sample
            torch.testing.assert_close(prior.tweedie_vp(x, torch.tensor([t])), x0, rtol=0, atol=2e-4)


def test_learned_range_variance_and_cosine_schedule(tmp_path):
    unet = _unet(out_ch=6, seed=4)
    sched = _pixel_pipeline(tmp_path, unet, variance_type="learned_range", beta_schedule="squaredcos_cap_v2")
    prior = priors.resolve(str(tmp_path))
    assert prior.card.learned_variance and prior.card.schedule == "cosine"
    torch.testing.assert_close(prior.alphas_cumprod, sched.alphas_cumprod, rtol=0, atol=1e-6)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        eps, v = prior.model_output(x, 7)
        ref = unet(x, 7).sample
    torch.testing.assert_close(torch.cat([eps, v], 1), ref, rtol=0, atol=1e-6)


def _latent_pipeline(path, ae, unet, name):
    ae.save_pretrained(path / name)
    unet.save_pretrained(path / "unet")
    diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195,
                            clip_sample=False).save_pretrained(path / "scheduler")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline", "unet": ["diffusers",
                                                       "UNet2DModel"], name: ["diffusers", type(ae).__name__],
                                                       "scheduler": ["diffusers", "DDIMScheduler"]}))


def test_vq_latent_pipeline(tmp_path):
    torch.manual_seed(5)
    vq = diffusers.VQModel(latent_channels=3, num_vq_embeddings=16, **AE).eval()
    unet = _unet(seed=6)
    _latent_pipeline(tmp_path, vq, unet, "vqvae")
    prior = priors.resolve(str(tmp_path))
    assert isinstance(prior, LatentPrior) and prior.card.latent
    assert prior.card.image_size == 64 and prior.card.extra["latent_shape"] == [3, 16, 16]
    assert prior.scale_factor == 1.0 and prior.card.schedule == "ldm-linear"
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = prior.encode(x)
        torch.testing.assert_close(z, vq.encode(x).latents, rtol=0, atol=1e-5)
        assert z.shape == (1, 3, 16, 16) and prior.latent_shape((64, 64)) == (3, 16, 16)
        torch.testing.assert_close(prior.decode(z), vq.decode(z).sample, rtol=0, atol=1e-5)  # quantised decode
        torch.testing.assert_close(prior.model_output(z, 20)[0], unet(z, 20).sample, rtol=0, atol=1e-6)


def test_kl_latent_pipeline_uses_the_scaling_factor(tmp_path):
    torch.manual_seed(7)
    vae = diffusers.AutoencoderKL(latent_channels=3, scaling_factor=0.5, **AE).eval()
    unet = _unet(seed=8)
    _latent_pipeline(tmp_path, vae, unet, "vae")
    prior = priors.resolve(str(tmp_path))
    assert isinstance(prior, LatentPrior) and prior.scale_factor == 0.5
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = prior.encode(x)
        torch.testing.assert_close(z, vae.encode(x).latent_dist.mean * 0.5, rtol=0, atol=1e-5)
        torch.testing.assert_close(prior.decode(z), vae.decode(z / 0.5).sample, rtol=0, atol=1e-5)


def test_missing_pieces_are_named(pixel, tmp_path):
    path, _, _ = pixel
    no_sched = tmp_path / "nosched"
    shutil.copytree(path / "unet", no_sched / "unet")
    with pytest.raises(PriorError, match="no scheduler config.*scheduler_config.json"):
        priors.resolve(str(no_sched))
    no_vq = tmp_path / "novq"
    shutil.copytree(path, no_vq)
    index = json.loads((no_vq / "model_index.json").read_text())
    (no_vq / "model_index.json").write_text(json.dumps(dict(index, vqvae=["diffusers", "VQModel"])))
    with pytest.raises(PriorError, match="'vqvae'.*no vqvae/config.json"):
        priors.resolve(str(no_vq))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PriorError, match="no UNet"):
        priors.resolve(str(tmp_path / "empty"))
    no_weights = tmp_path / "noweights"
    shutil.copytree(path, no_weights)
    (no_weights / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(PriorError, match="no weights"):
        priors.resolve(str(no_weights))


def test_wrong_weights_and_refused_schedules(pixel, tmp_path):
    from safetensors.torch import load_file, save_file

    path, _, _ = pixel
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state.pop("conv_out.weight")
    save_file(state, str(weights))
    with pytest.raises(PriorError, match="missing key.*conv_out.weight"):  # never a silent random init
        priors.resolve(str(bad))
    sched_path = path / "scheduler" / "scheduler_config.json"
    ve = {"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 2000, "sigma_min": 0.01, "sigma_max": 1348}
    cfg = json.loads(sched_path.read_text())
    for sched, message in ((dict(cfg, beta_schedule="sigmoid"), "sigmoid"),
                           (dict(cfg, rescale_betas_zero_snr=True), "zero terminal SNR"),
                           (ve, "ScoreSdeVeScheduler.*not a discrete VP")):
        odd = tmp_path / f"odd{len(message)}"
        shutil.copytree(path, odd)
        (odd / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
        with pytest.raises(PriorError, match=message):
            priors.resolve(str(odd))


def test_pickled_bin_weights_load_weights_only(pixel, tmp_path):
    path, unet, _ = pixel
    binf = tmp_path / "bin"
    shutil.copytree(path, binf)
    (binf / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(unet.state_dict(), binf / "unet" / "diffusion_pytorch_model.bin")
    prior = priors.resolve(str(binf))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(prior.net(x, 9), unet(x, 9).sample, rtol=0, atol=1e-6)


def test_legacy_attention_key_names_load(pixel, tmp_path):
    """Old hub checkpoints (google/ddpm-*, CompVis/ldm-*) name attention weights query/key/value/proj_attn."""
    from safetensors.torch import load_file, save_file

    path, unet, _ = pixel
    old = tmp_path / "old"
    shutil.copytree(path, old)
    weights = old / "unet" / "diffusion_pytorch_model.safetensors"
    names = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for k, v in load_file(str(weights)).items():
        for new, legacy in names.items():
            k = k.replace(new, legacy) if "attentions" in k else k
        state[k] = v
    assert any(".query." in k for k in state)
    save_file(state, str(weights))
    prior = priors.resolve(str(old))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(prior.net(x, 9), unet(x, 9).sample, rtol=0, atol=1e-6)


def test_without_diffusers_the_error_says_how_to_install(pixel, monkeypatch):
    path, _, _ = pixel
    monkeypatch.setitem(__import__("sys").modules, "diffusers", None)  # import diffusers → ImportError
    with pytest.raises(PriorError, match=r"pip install 'restore\[diffusers\]'"):
        priors.resolve(str(path))
