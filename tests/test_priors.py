"""The prior interface, checkpoint loading (exact or refused), the registry, and a training round trip."""

import json
import math
import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import priors
from priors.adm import ADMConfig, ADMUNet
from priors.base import DiffusionPrior, PriorCard, PriorError
from priors.load import load_prior_file
from priors.train import ARCHITECTURES, TrainConfig, ema_decay, power_ema_gamma, train
from restore.cli import main
from tests.solver_testing import random_image_folder

TINY = ADMConfig.from_dict(dict(ARCHITECTURES["tiny"], image_size=16, in_channels=3, learn_sigma=True))


def tiny_prior(seed=0) -> DiffusionPrior:
    torch.manual_seed(seed)
    net = ADMUNet(TINY)
    for p in net.parameters():  # the output conv is zero-initialised: give it weights so outputs are not trivial
        torch.nn.init.normal_(p, std=0.05)
    card = PriorCard(name="tiny", image_size=16, channels=3, domain="test", learned_variance=True,
                     architecture={"kind": "adm", **TINY.to_dict()})
    return DiffusionPrior(net.eval(), card)


def test_sigma_space_and_vp_view_are_the_same_model():
    prior = tiny_prior()
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 3, 16, 16, generator=g)
    for t in (0, 10, 500, 999):
        a = prior.alphas_cumprod[t]
        sigma = float(((1 - a) / a).sqrt())
        via_vp = prior.tweedie_vp(x_t, torch.tensor([t, t]))
        via_sigma = prior.denoise(x_t / a.sqrt(), sigma)
        assert torch.allclose(via_vp, via_sigma, atol=1e-4, rtol=1e-4), t


def test_sigma_t_conversions_invert_each_other():
    prior = tiny_prior()
    t = torch.tensor([0.0, 3.5, 250.25, 998.0])
    assert torch.allclose(prior.t_of_sigma(prior.sigma_of_t(t)), t, atol=1e-3)
    assert torch.allclose(prior.sigma_of_t(torch.arange(1000.0)), prior.sigmas, rtol=1e-5)
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    assert torch.allclose(prior.alphas_cumprod64, ab)
    assert torch.allclose(prior.sigmas.double(), ((1 - ab) / ab).sqrt(), rtol=1e-5)


def test_linear_schedule_is_adm_and_ldm_differs():
    from priors.base import ldm_linear_betas, linear_betas

    b = linear_betas()
    assert float(b[0]) == pytest.approx(1e-4) and float(b[-1]) == pytest.approx(0.02)
    ldm = ldm_linear_betas()
    assert float(ldm[0]) == pytest.approx(0.0015) and float(ldm[-1]) == pytest.approx(0.0195)


def test_learned_variance_channels_are_split():
    prior = tiny_prior()
    eps, v = prior.model_output(torch.randn(1, 3, 16, 16), torch.tensor([5]))
    assert eps.shape == v.shape == (1, 3, 16, 16)


def _save(prior, path):
    save_file({k: v.contiguous() for k, v in prior.net.state_dict().items()}, str(path),
              metadata={"adm": json.dumps(TINY.to_dict())})


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    prior = tiny_prior()
    _save(prior, tmp_path / "p.safetensors")
    again = priors.resolve(str(tmp_path / "p.safetensors"))
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(again.denoise(x, 0.7), prior.denoise(x, 0.7))


def test_guided_diffusion_style_pt_loads_with_inferred_config(tmp_path):
    prior = tiny_prior()
    torch.save({"model": prior.net.state_dict()}, tmp_path / "ckpt.pt")
    again = load_prior_file(tmp_path / "ckpt.pt", config=TINY)
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(again.denoise(x, 0.3), prior.denoise(x, 0.3))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/restore_pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Evil()}, f)
    with pytest.raises(PriorError, match="refuses for safety"):
        load_prior_file(path)
    assert not os.path.exists("/tmp/restore_pwned")


def test_a_truncated_file_is_refused(tmp_path):
    prior = tiny_prior()
    _save(prior, tmp_path / "p.safetensors")
    data = (tmp_path / "p.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PriorError, match="truncated or corrupt"):
        load_prior_file(tmp_path / "cut.safetensors")
    torch.save(prior.net.state_dict(), tmp_path / "p.pt")
    data = (tmp_path / "p.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(PriorError, match="truncated or corrupt"):
        load_prior_file(tmp_path / "cut.pt", config=TINY)


def test_a_checkpoint_with_wrong_shapes_is_refused_never_randomly_initialised(tmp_path):
    state = tiny_prior().net.state_dict()
    state["out.2.weight"] = torch.zeros(3, 32, 3, 3)  # learn_sigma config expects 6 output channels
    state["out.2.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(PriorError, match="does not match the architecture"):
        load_prior_file(tmp_path / "bad.pt", config=TINY)


def test_public_prior_not_downloaded_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))
    with pytest.raises(PriorError, match="restore prior fetch ffhq-256"):
        priors.resolve("ffhq-256")


def test_fetch_offline_names_the_url_and_the_local_option(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(PriorError) as info:
        priors.fetch("imagenet-256")
    message = str(info.value)
    assert "openaipublic" in message and "--prior /path/to/256x256_diffusion_uncond.pt" in message


def test_unknown_prior_lists_the_known_ones():
    with pytest.raises(PriorError, match="imagenet-256"):
        priors.resolve("no-such-prior")


def _tiny_dataset(folder, n=12):
    random_image_folder(folder, n)


def test_train_save_reload_through_the_registry_gives_identical_outputs(tmp_path):
    _tiny_dataset(tmp_path / "data")
    cfg = TrainConfig(data=str(tmp_path / "data"), name="mini", out=str(tmp_path / "out"), size=16, arch="tiny",
                      steps=3, batch_size=4, checkpoint_every=2, work_dir=str(tmp_path / "work"), device="cpu",
                      fp16_weights=False, domain="noise", licence="test")
    weights, card_path = train(cfg, log=lambda m: None)
    card = json.loads(card_path.read_text())
    assert card["extra"]["steps"] == 3 and card["sha256"] == priors.base.sha256_file(weights)
    loaded = priors.resolve(str(weights))
    assert loaded.card.name == "mini" and loaded.card.licence == "test"
    # the exported EMA weights are the checkpoint's EMA weights
    state = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=True)
    ema = ADMUNet(ADMConfig.from_dict(state["adm"]))
    ema.load_state_dict(state["ema"])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0])
    assert torch.equal(loaded.net(x, t), ema.eval()(x, t))
    # resuming at the final step trains nothing more and exports the same weights
    again, _ = train(cfg, log=lambda m: None)
    assert priors.base.sha256_file(again) == card["sha256"]


def test_the_card_names_the_hardware_of_every_resumed_chunk(tmp_path, monkeypatch):
    """Training resumed on other hardware (here: another thread count) records each chunk's steps and machine; a
    checkpoint from before these records says its steps' hardware is not recorded."""
    from priors.train import _hardware

    _tiny_dataset(tmp_path / "data")
    cfg = TrainConfig(data=str(tmp_path / "data"), name="mini", out=str(tmp_path / "out"), size=16, arch="tiny",
                      steps=2, batch_size=2, checkpoint_every=1, work_dir=str(tmp_path / "work"), device="cpu")
    threads = 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    two = _hardware(torch.device("cpu"))
    card = json.loads(train(cfg, log=lambda m: None)[1].read_text())["extra"]
    assert card["hardware"] == two and [(r["first"], r["last"]) for r in card["hardware_runs"]] == [(1, 2)]
    threads = 1
    one = _hardware(torch.device("cpu"))
    assert one != two
    later = TrainConfig(**dict(cfg.__dict__, steps=5))
    card = json.loads(train(later, log=lambda m: None)[1].read_text())["extra"]
    assert card["hardware"] == f"{two} (steps 1–2); {one} (steps 3–5)"
    assert [(r["first"], r["last"], r["hardware"]) for r in card["hardware_runs"]] == [(1, 2, two), (3, 5, one)]
    assert card["steps"] == 5
    # resuming at the final step adds no chunk; a third chunk on the same machine extends the second's range
    assert json.loads(train(later, log=lambda m: None)[1].read_text())["extra"]["hardware"] == card["hardware"]
    card = json.loads(train(TrainConfig(**dict(cfg.__dict__, steps=6)), log=lambda m: None)[1].read_text())["extra"]
    assert card["hardware"] == f"{two} (steps 1–2); {one} (steps 3–6)" and len(card["hardware_runs"]) == 3
    # a checkpoint written before the per-chunk records
    ckpt = tmp_path / "work" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["runs"]
    torch.save(state, ckpt)
    card = json.loads(train(TrainConfig(**dict(cfg.__dict__, steps=7)), log=lambda m: None)[1].read_text())["extra"]
    assert card["hardware"] == f"not recorded (a checkpoint from before per-chunk records) (steps 1–6); {one} (step 7)"


def _ema_weights(spec, steps: int) -> np.ndarray:
    """The weight of each update's raw network in the EMA after ``steps`` updates (unrolled ``ema_decay``)."""
    w = np.zeros(steps)
    for t in range(steps):
        b = ema_decay(spec, t)
        w *= b
        w[t] = 1 - b
    return w


def _rel_std(w: np.ndarray) -> float:
    x = np.arange(1, len(w) + 1) / len(w)
    mean = (w * x).sum() / w.sum()
    return float(np.sqrt((w * (x - mean) ** 2).sum() / w.sum()))


def test_power_ema_profiles_have_the_requested_relative_length():
    """Karras et al. (2024)'s power-function EMA: γ solves σ_rel² = (γ+1)/((γ+2)²(γ+3)); the unrolled discrete EMA
    weights sum to 1, grow like t^γ and have relative std σ_rel at any run length. Today's rule min(d, (1+t)/(10+t))
    is, before its warm-up term passes d, the same kind of average with γ = 8 (σ_rel = √(9/1100) ≈ 0.090); after,
    a fixed decay whose weights fall geometrically, so its relative length shrinks as the run grows."""
    for rel in (0.05, 0.1, 0.25):
        gamma = power_ema_gamma(rel)
        assert math.isclose((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)), rel**2, rel_tol=1e-9)
        for steps in (500, 4000):
            w = _ema_weights(f"rel:{rel}", steps)
            assert math.isclose(w.sum(), 1.0, rel_tol=1e-9) and abs(_rel_std(w) - rel) < 2e-4 * (4000 / steps)
            t = np.arange(1, steps + 1)
            ratio = w[steps // 2:] / t[steps // 2:] ** gamma  # the weights are ∝ t^γ (up to discretisation)
            assert ratio.max() / ratio.min() < 1 + 2 * gamma / steps
    w = _ema_weights(0.999, 4000)
    assert abs(_rel_std(w) - math.sqrt(9 / 1100)) < 1e-3
    w = _ema_weights(0.999, 20000)  # fixed from step 8,990 on: the last weights are 0.001·0.999^k
    assert np.allclose(w[-5:][::-1], 0.001 * 0.999 ** np.arange(5), rtol=1e-9)
    assert _rel_std(w) < 0.06
    with pytest.raises(PriorError, match="relative EMA length"):
        ema_decay("rel:0.3", 0)


def test_extra_ema_profiles_are_kept_and_resumed_beside_the_shipped_one(tmp_path):
    """``fit(extra_emas=...)``: a profile equal to ``--ema`` gives the shipped EMA's weights exactly, another
    profile gives other weights; a run in two chunks keeps the same profiles as one run; a checkpoint without them
    is refused rather than starting them half-way."""
    from priors.train import ImageFolder, fit

    _tiny_dataset(tmp_path / "data")
    data = ImageFolder(str(tmp_path / "data"), 16, 3, "resize")
    cfg = TrainConfig(data=str(tmp_path / "data"), name="m", out="", size=16, arch="tiny", steps=4, batch_size=2,
                      checkpoint_every=10, work_dir=str(tmp_path / "one"), device="cpu", ema=0.999)
    specs = ("0.999", "rel:0.2")
    fit(cfg, data, log=lambda m: None, extra_emas=specs)
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    params = [name for name, _ in ADMUNet(cfg.adm_config()).named_parameters()]
    assert all(torch.equal(one["ema"][n], v) for n, v in zip(params, one["ema_extra"]["0.999"]))
    assert any(not torch.equal(one["ema"][n], v) for n, v in zip(params, one["ema_extra"]["rel:0.2"]))
    two = TrainConfig(**dict(cfg.__dict__, work_dir=str(tmp_path / "two")))
    fit(two, data, log=lambda m: None, stop_at=2, extra_emas=specs)
    fit(two, data, log=lambda m: None, extra_emas=specs)
    both = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    for spec in specs:
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(one["ema_extra"][spec], both["ema_extra"][spec]))
    plain = TrainConfig(**dict(cfg.__dict__, work_dir=str(tmp_path / "plain"), steps=2))
    fit(plain, data, log=lambda m: None)
    with pytest.raises(PriorError, match="lacks the EMA profiles"):
        fit(TrainConfig(**dict(plain.__dict__, steps=3)), data, log=lambda m: None, extra_emas=specs)


def test_norm_groups_travel_from_the_arch_through_the_card(tmp_path):
    """A prior trained with --arch '{..., "norm_groups": 8}' is reloaded (registry, card) with 8-group norms and
    gives its checkpoint's EMA outputs; a 32-group network with the same weights gives others."""
    _tiny_dataset(tmp_path / "data")
    arch = json.dumps(dict(ARCHITECTURES["tiny"], norm_groups=8))
    cfg = TrainConfig(data=str(tmp_path / "data"), name="g8", out=str(tmp_path / "out"), size=16, arch=arch,
                      steps=2, batch_size=4, work_dir=str(tmp_path / "work"), device="cpu", fp16_weights=False)
    weights, card_path = train(cfg, log=lambda m: None)
    assert json.loads(card_path.read_text())["architecture"]["norm_groups"] == 8
    loaded = priors.resolve(str(weights))
    assert {m.num_groups for m in loaded.net.modules() if isinstance(m, torch.nn.GroupNorm)} == {8}
    state = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=True)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0])
    ema = ADMUNet(ADMConfig.from_dict(state["adm"]))
    ema.load_state_dict(state["ema"])
    assert torch.equal(loaded.net(x, t), ema.eval()(x, t))
    g32 = ADMUNet(ADMConfig.from_dict(dict(state["adm"], norm_groups=32)))
    g32.load_state_dict(state["ema"])
    assert not torch.allclose(loaded.net(x, t), g32.eval()(x, t))


def test_prior_cli_train_show_verify(tmp_path, capsys):
    _tiny_dataset(tmp_path / "data")
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "cli", "--out", str(tmp_path / "out"),
                 "--size", "16", "--arch", "tiny", "--steps", "2", "--batch-size", "2",
                 "--work-dir", str(tmp_path / "w"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    code = main(["prior", "verify", str(tmp_path / "out" / "cli.safetensors")])
    out = capsys.readouterr().out
    assert code == 0 and "sha256" in out and "loads exactly" in out
    assert main(["prior", "train", str(tmp_path / "nowhere"), "--name", "x"]) == 2
    assert main(["prior", "verify", str(tmp_path / "nowhere.pt")]) == 2
    # a short run on few images is said; a run of 0 steps is refused (it would write an untrained prior)
    capsys.readouterr()
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "zero", "--out", str(tmp_path / "out"),
                 "--size", "16", "--arch", "tiny", "--steps", "0", "--work-dir", str(tmp_path / "w0")])
    assert code == 2 and "--steps" in capsys.readouterr().err and not (tmp_path / "out" / "zero.safetensors").exists()
    # prior show takes a checkpoint path, as its help says
    code = main(["prior", "show", str(tmp_path / "out" / "cli.safetensors")])
    shown = capsys.readouterr().out
    assert code == 0 and '"image_size": 16' in shown
    # --ema: a relative length is recorded in the card as given; a bad value is one sentence with both forms
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "rel", "--out", str(tmp_path / "out"),
                 "--size", "16", "--arch", "tiny", "--steps", "2", "--batch-size", "2", "--ema", "rel:0.10",
                 "--work-dir", str(tmp_path / "wr"), "--device", "cpu"])
    assert code == 0 and json.loads((tmp_path / "out" / "rel.json").read_text())["extra"]["ema"] == "rel:0.1"
    for bad in ("1.5", "fast", "rel:0.5"):
        capsys.readouterr()
        code = main(["prior", "train", str(tmp_path / "data"), "--name", "bad", "--out", str(tmp_path / "out"),
                     "--size", "16", "--arch", "tiny", "--steps", "1", "--ema", bad, "--work-dir", str(tmp_path / "wb")])
        err = capsys.readouterr().err
        assert code == 2 and ("rel:0.1" in err or "(0, 0.28)" in err), err
        assert not (tmp_path / "out" / "bad.safetensors").exists()


def test_fine_tuning_starts_from_the_given_prior_and_records_it(tmp_path, capsys):
    """--init loads the prior's weights into the model and the EMA before step 1 (0 steps of change at lr → 0 keeps
    them), the card records what it started from; another architecture is refused in one sentence."""
    from priors.train import learning_rate

    _tiny_dataset(tmp_path / "data")
    base = TrainConfig(data=str(tmp_path / "data"), name="base", out=str(tmp_path / "out"), size=16, arch="tiny",
                       steps=2, batch_size=2, work_dir=str(tmp_path / "w1"), device="cpu", fp16_weights=False)
    weights, _ = train(base, log=lambda m: None)
    tuned = TrainConfig(**dict(base.__dict__, name="tuned", work_dir=str(tmp_path / "w2"), init=str(weights),
                               lr=1e-12, steps=1))
    out, card_path = train(tuned, log=lambda m: None)
    first, second = priors.resolve(str(weights)), priors.resolve(str(out))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0])
    assert torch.allclose(first.net(x, t), second.net(x, t), atol=1e-6)   # lr 1e-12: the weights it started from
    extra = json.loads(card_path.read_text())["extra"]
    assert extra["init"] == str(weights) and extra["init_steps"] == 2 and extra["steps"] == 1
    assert extra["init_images_seen"] == 4 and extra["init_pixels_seen"] == 4 * 16 * 16
    # a fine-tune of the fine-tune counts the whole chain: 4 + 2 images before it
    again, card2 = train(TrainConfig(**dict(tuned.__dict__, name="again", work_dir=str(tmp_path / "w4"),
                                            init=str(out))), log=lambda m: None)
    extra2 = json.loads(card2.read_text())["extra"]
    assert extra2["init_images_seen"] == 6 and extra2["init_pixels_seen"] == 6 * 16 * 16
    assert extra2["init_train_seconds"] == pytest.approx(extra["train_seconds"] + extra["init_train_seconds"])
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "x", "--out", str(tmp_path / "o3"), "--size",
                 "16", "--arch", "cpu64", "--steps", "1", "--init", str(weights), "--work-dir", str(tmp_path / "w3")])
    err = capsys.readouterr().err
    assert code == 2 and "another architecture" in err and "--arch" in err
    # the cosine schedule: warm-up, then from lr down to 0 at the last step
    cos = TrainConfig(data="", name="c", out="", lr=1.0, warmup=10, steps=110, lr_schedule="cosine")
    assert learning_rate(cos, 0) == pytest.approx(0.1 * (0.5 * (1 + torch.cos(torch.tensor(0.0)).item())))
    assert learning_rate(cos, 55) == pytest.approx(0.5 * (1 + float(torch.cos(torch.tensor(torch.pi * 0.5)))))
    assert learning_rate(cos, 110) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainConfig(data="", name="c", out="", lr=1.0, warmup=10), 50) == 1.0


def test_training_warnings_for_few_images_and_short_runs():
    from priors.train import training_warnings

    assert training_warnings(22_407, 4_600, 16) == []
    assert training_warnings(400, 500, 16, fine_tune=True) == [] and len(training_warnings(400, 500, 16)) == 1
    few = " ".join(training_warnings(8, 30, 16))
    assert "8 training images is very few" in few and "30 steps of batch 16 (480 images seen)" in few


def test_prior_cli_trains_a_latent_prior(tmp_path, capsys):
    _tiny_dataset(tmp_path / "data")
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "lat", "--out", str(tmp_path / "out"),
                 "--size", "16", "--arch", "tiny", "--steps", "2", "--batch-size", "2", "--latent",
                 "--autoencoder-steps", "2", "--work-dir", str(tmp_path / "w"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    prior = priors.resolve(str(tmp_path / "out" / "lat.safetensors"))
    assert prior.card.latent
    z = prior.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    assert prior.decode(z).shape == (1, 3, 16, 16)


def test_convolutional_crop_training_gives_an_any_size_card_at_the_load_size(tmp_path):
    """--crop random with an attention-free architecture: the card records the native scale (--load-size) and that
    the prior runs on any size; the solver does not refuse other sizes; --load-size below --size is refused."""
    _tiny_dataset(tmp_path / "data")  # 20×20 images, resized to 18×18 on loading, 16×16 crops
    cfg = TrainConfig(data=str(tmp_path / "data"), name="conv", out=str(tmp_path / "out"), size=16, arch="cpu-conv",
                      crop="random", load_size=18, steps=1, batch_size=2, work_dir=str(tmp_path / "w"), device="cpu")
    weights, card_path = train(cfg, log=lambda m: None)
    card = json.loads(card_path.read_text())
    assert card["image_size"] == 18 and card["extra"]["any_size"] and card["extra"]["train_size"] == 16
    assert card["extra"]["load_size"] == 18 and card["architecture"]["attention_resolutions"] == ""
    prior = priors.resolve(str(weights))
    assert prior.denoise(torch.zeros(1, 3, 24, 40), 0.3).shape == (1, 3, 24, 40)
    from restore.fit import plan
    assert plan(prior.card, "denoise", (3, 24, 40), None, plain=True) is None  # no refusal, nothing to fit
    # an architecture with attention at fixed resolutions, or whole-image training, keeps a fixed size
    cfg2 = TrainConfig(data=str(tmp_path / "data"), name="fixed", out=str(tmp_path / "out"), size=16, arch="tiny",
                       crop="resize", steps=1, batch_size=2, work_dir=str(tmp_path / "w2"), device="cpu")
    card2 = json.loads(train(cfg2, log=lambda m: None)[1].read_text())
    assert card2["image_size"] == 16 and not card2["extra"]["any_size"]
    assert main(["prior", "train", str(tmp_path / "data"), "--name", "x", "--size", "16", "--load-size", "8"]) == 2


def test_image_folder_load_size_resizes_before_cropping(tmp_path):
    from priors.train import ImageFolder

    _tiny_dataset(tmp_path / "data", n=2)
    folder = ImageFolder(str(tmp_path / "data"), 8, 3, "random", load_size=10)
    assert {a.shape for a in folder.images} == {(10, 10, 3)}
    assert folder.batch(3, torch.Generator().manual_seed(0)).shape == (3, 3, 8, 8)


def test_prior_cli_autoencoder_arch(tmp_path, capsys):
    _tiny_dataset(tmp_path / "data")
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "lat2", "--out", str(tmp_path / "out"),
                 "--size", "16", "--arch", "tiny", "--steps", "1", "--batch-size", "2", "--latent",
                 "--autoencoder-steps", "1", "--autoencoder-arch", '{"base_channels": 8, "num_res_blocks": 1}',
                 "--work-dir", str(tmp_path / "w"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    ae_card = json.loads((tmp_path / "out" / "lat2-ae.json").read_text())
    assert ae_card["architecture"]["base_channels"] == 8 and ae_card["architecture"]["num_res_blocks"] == 1
    assert ae_card["lr_schedule"] == "constant"  # the default; --autoencoder-lr-schedule cosine decays it
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "x", "--latent", "--autoencoder-lr-schedule",
                 "step"])
    assert code == 2 and "--autoencoder-lr-schedule must be constant or cosine" in capsys.readouterr().err
    code = main(["prior", "train", str(tmp_path / "data"), "--name", "x", "--latent", "--autoencoder-arch", "{bad"])
    assert code == 2 and "not valid JSON" in capsys.readouterr().err


class _FakeResponse:
    """An HTTP response serving ``data`` from a byte offset, optionally failing after ``fail_after`` bytes."""

    def __init__(self, data: bytes, start: int, fail_after: int | None):
        self.data, self.pos, self.fail_after, self.sent = data, start, fail_after, 0
        self.status = 206 if start else 200
        self.headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data) - start)}

    def read(self, n):
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        n = min(n, 4096, len(self.data) - self.pos)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        self.sent += n
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fetch_resumes_an_interrupted_download_and_verifies_it(tmp_path, monkeypatch):
    from priors import configs, registry

    prior = tiny_prior()
    torch.save(prior.net.state_dict(), tmp_path / "tiny.pt")
    data = (tmp_path / "tiny.pt").read_bytes()
    monkeypatch.setitem(configs.ADM_CONFIGS, "tiny16", TINY)
    monkeypatch.setitem(registry.PUBLIC, "tiny-public", registry.PublicCheckpoint(
        name="tiny-public", filename="tiny.pt", url="https://example.invalid/tiny.pt", config="tiny16",
        approx_bytes=len(data), domain="test", training_data="none", licence="test", used_by="tests"))
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path / "cache"))
    ranges = []

    def fake_urlopen(request, timeout=None):
        header = request.headers.get("Range", "bytes=0-")
        start = int(header.split("=")[1].rstrip("-"))
        ranges.append(start)
        return _FakeResponse(data, start, fail_after=len(data) // 2 if len(ranges) == 1 else None)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    with pytest.raises(PriorError, match="interrupted at .* run 'restore prior fetch tiny-public' again"):
        registry.fetch("tiny-public")
    path = registry.fetch("tiny-public")
    assert ranges[0] == 0 and ranges[1] > 0, "the second request resumes where the first stopped"
    assert path.read_bytes() == data
    assert (path.parent / "tiny.pt.sha256").read_text().strip() == priors.base.sha256_file(path)
    loaded = priors.resolve("tiny-public")
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(loaded.denoise(x, 0.4), prior.denoise(x, 0.4))
