"""EDM preconditioning (priors.precond): the exact Gaussian posterior mean when F ≡ 0, the same model in the σ-space
and discrete VP views, EDM's loss, and a --precond edm training round trip through the weight file and the registry."""

import json

import pytest
import torch

import priors
from priors.adm import ADMConfig, ADMUNet
from priors.base import SCHEDULES, DiffusionPrior, PriorCard, PriorError
from priors.precond import P_MEAN, P_STD, SIGMA_DATA, EDMPrecond
from priors.train import ARCHITECTURES, TrainConfig, train
from tests.solver_testing import random_image_folder

TINY = ADMConfig.from_dict(dict(ARCHITECTURES["tiny"], image_size=16, in_channels=3, learn_sigma=False))
AB = torch.cumprod(1 - SCHEDULES["linear"](1000), 0)


class Zero(torch.nn.Module):
    """F ≡ 0 (records what it was called with)."""
    cfg = TINY

    def forward(self, x, t):
        self.seen = (x.clone(), t.clone())
        return torch.zeros_like(x)


def _card(**kw):
    return PriorCard(name="edm", image_size=16, channels=3, domain="test", parameterisation="edm", **kw)


def test_with_F_zero_the_denoiser_is_the_exact_gaussian_posterior_mean_in_both_views():
    """For x₀ ~ N(0, σ_d² I) and x = x₀ + σn, E[x₀ | x] = σ_d²/(σ² + σ_d²) x: EDM's c_skip. The prior built on the
    wrapper gives it through its σ-space denoiser and through Tweedie on the VP view (ε̂ = (x − D)/σ)."""
    prior = DiffusionPrior(EDMPrecond(Zero(), AB), _card())
    x = torch.randn(3, 3, 16, 16)
    sigma = torch.tensor([0.05, 0.8, 20.0])
    s = sigma.view(-1, 1, 1, 1)
    expected = SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2) * x
    torch.testing.assert_close(prior.denoise(x, sigma), expected, rtol=2e-5, atol=1e-5)
    t = torch.tensor([10.0, 400.0, 990.0])
    a = prior.alpha_bar(t, x)
    x_t = a.sqrt() * x
    s_t = prior.sigma_of_t(t).view(-1, 1, 1, 1)
    torch.testing.assert_close(prior.tweedie_vp(x_t, t), SIGMA_DATA ** 2 / (s_t ** 2 + SIGMA_DATA ** 2) * x,
                               rtol=2e-5, atol=1e-5)


def test_network_input_is_scaled_by_c_in_and_told_the_vp_timestep():
    zero = Zero()
    wrapper = EDMPrecond(zero, AB)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 4.0])
    wrapper.denoise(x, sigma)
    seen_x, seen_t = zero.seen
    torch.testing.assert_close(seen_x, x / (sigma.view(-1, 1, 1, 1) ** 2 + SIGMA_DATA ** 2).sqrt())
    prior = DiffusionPrior(wrapper, _card())
    torch.testing.assert_close(seen_t, prior.t_of_sigma(sigma))  # the continuous VP timestep of σ


def test_a_real_network_gives_one_model_in_both_views():
    torch.manual_seed(0)
    net = ADMUNet(TINY)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    prior = DiffusionPrior(EDMPrecond(net.eval(), AB), _card())
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([50.0, 600.0])
    a = prior.alpha_bar(t, x)
    sigma = prior.sigma_of_t(t)
    with torch.no_grad():
        torch.testing.assert_close(prior.tweedie_vp(a.sqrt() * x, t), prior.denoise(x, sigma), rtol=1e-4, atol=1e-4)


def test_loss_is_edms_weighted_denoising_loss_with_log_normal_sigmas():
    zero = Zero()
    wrapper = EDMPrecond(zero, AB)
    x0 = torch.randn(4, 3, 16, 16) * 0.5
    loss = wrapper.loss(x0, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    sigma = (torch.randn(4, generator=g) * P_STD + P_MEAN).exp().clamp(*wrapper.sigma_range)
    n = torch.randn(x0.shape, generator=g)
    s = sigma.view(-1, 1, 1, 1)
    d = SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2) * (x0 + s * n)
    weight = (s ** 2 + SIGMA_DATA ** 2) / (s * SIGMA_DATA) ** 2
    torch.testing.assert_close(loss, (weight * (d - x0) ** 2).mean())


def test_edm_training_round_trip_through_the_weight_file(tmp_path):
    random_image_folder(tmp_path / "data", n=6, size=16)
    cfg = TrainConfig(data=str(tmp_path / "data"), name="edm", out=str(tmp_path / "out"), size=16, arch="tiny",
                      steps=3, batch_size=2, checkpoint_every=2, work_dir=str(tmp_path / "w"), device="cpu",
                      fp16_weights=False, precond="edm")
    weights, card_path = train(cfg, log=lambda m: None)
    card = json.loads(card_path.read_text())
    assert card["parameterisation"] == "edm" and card["extra"]["precond"] == "edm"
    loaded = priors.resolve(str(weights))
    assert isinstance(loaded.net, EDMPrecond) and loaded.size_multiple == TINY.size_multiple
    state = torch.load(tmp_path / "w" / "checkpoint.pt", weights_only=True)
    assert state["precond"] == "edm"
    ema = EDMPrecond(ADMUNet(ADMConfig.from_dict(state["adm"])), AB)
    ema.net.load_state_dict(state["ema"])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0])
    with torch.no_grad():
        assert torch.equal(loaded.net(x, t), ema.eval()(x, t))
    # a ddpm checkpoint in the same work dir is not resumed as edm, and fine-tuning keeps the parameterisation
    with pytest.raises(PriorError, match="preconditioning"):
        train(TrainConfig(**dict(cfg.__dict__, precond="ddpm", steps=4)), log=lambda m: None)
    with pytest.raises(PriorError, match="--precond edm"):
        train(TrainConfig(**dict(cfg.__dict__, precond="ddpm", init=str(weights), name="ft",
                                 work_dir=str(tmp_path / "w2"))), log=lambda m: None)


def test_an_unknown_parameterisation_is_refused(tmp_path):
    from priors.load import load_prior_file
    from priors.train import save_safetensors

    net = ADMUNet(TINY)
    save_safetensors(net.state_dict(), tmp_path / "v.safetensors", {"format": "restore-adm"})
    card = PriorCard(name="v", image_size=16, channels=3, domain="test", parameterisation="v",
                     architecture={"kind": "adm", **TINY.to_dict()})
    (tmp_path / "v.json").write_text(json.dumps(card.to_dict()))
    with pytest.raises(PriorError, match="parameterisation 'v'"):
        load_prior_file(tmp_path / "v.safetensors")
