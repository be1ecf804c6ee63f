"""The ADM (guided-diffusion) UNet: checkpoint key/shape parity with the public 256² models (from the manifests in
../shared/data/adm_manifests), config inference, and behaviour of small CPU-sized configurations."""

from __future__ import annotations

import copy
import io
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from priors.adm import (
    ADMConfig,
    ADMConfigError,
    ADMStateDictError,
    ADMUNet,
    expected_shapes,
    infer_config,
    qkv_attention,
    state_dict_mismatch,
    timestep_embedding,
)
from priors.configs import ADM_CONFIGS

MANIFESTS = ["ffhq_10m", "256x256_diffusion_uncond"]

TINY = ADMConfig(
    image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
    learn_sigma=True, num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
)


def manifest(shared, name: str) -> dict:
    path = shared / "adm_manifests" / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return json.loads(path.read_text())


def randomised(cfg: ADMConfig, seed: int = 0) -> ADMUNet:
    """A model in eval mode whose every parameter is random (the zero-initialised output layers too, so that the
    output depends on every block)."""
    torch.manual_seed(seed)
    model = ADMUNet(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# the public checkpoints (built on the meta device: no memory)


@pytest.mark.shared
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_keys_shapes_and_count(shared, name):
    man = manifest(shared, name)
    model = ADMUNet(ADMConfig.from_dict(man["config"]), device="meta")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    want = {k: list(s) for k, s in man["state_dict"]}
    assert set(got) == set(want)
    assert got == want
    assert list(got) == [k for k, _ in man["state_dict"]]  # same order too
    assert model.num_parameters() == man["num_parameters"]
    # the named config in priors/configs.py is the same architecture
    assert expected_shapes(ADM_CONFIGS[name]) == {k: tuple(s) for k, s in want.items()}


@pytest.mark.shared
@pytest.mark.parametrize("name", MANIFESTS)
def test_infer_config_from_manifest(shared, name):
    man = manifest(shared, name)
    meta_sd = {k: torch.empty(s, device="meta") for k, s in man["state_dict"]}
    cfg = infer_config(meta_sd, image_size=man["config"]["image_size"])
    assert state_dict_mismatch(expected_shapes(cfg), meta_sd) == []
    orig = ADMConfig.from_dict(man["config"])
    for f in ("num_channels", "num_res_blocks", "learn_sigma", "use_scale_shift_norm", "resblock_updown",
              "class_cond", "num_head_channels"):
        assert getattr(cfg, f) == getattr(orig, f), f
    assert cfg.channel_mults == orig.channel_mults
    assert sorted(cfg.attention_ds) == sorted(orig.attention_ds)
    # a model built from meta shapes loads them (assign=True keeps the meta tensors: nothing allocated)
    model = ADMUNet.from_state_dict(meta_sd, image_size=256)
    assert model.cfg == cfg


# ---------------------------------------------------------------------------------------------------------------------
# config inference on small architectures (every structural option)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"resblock_updown": False},
        {"resblock_updown": False, "conv_resample": False},
        {"num_res_blocks": 0},
        {"num_res_blocks": 2, "channel_mult": "1,2,2,2", "attention_resolutions": "16,8", "image_size": 64},
        {"channel_mult": "1", "attention_resolutions": ""},
        {"learn_sigma": False, "use_scale_shift_norm": False, "class_cond": True, "num_classes": 10},
        {"in_channels": 1, "channel_mult": "1,1,2", "attention_resolutions": "32,8"},
        {"resblock_updown": False, "num_res_blocks": 3, "channel_mult": "2,1,3"},
    ],
)
def test_infer_config_small(changes):
    cfg = TINY.replace(**changes)
    sd = ADMUNet(cfg, device="meta").state_dict()
    got = infer_config(sd, image_size=cfg.image_size, num_head_channels=cfg.num_head_channels)
    assert expected_shapes(got) == expected_shapes(cfg)
    for f in ("in_channels", "num_channels", "num_res_blocks", "learn_sigma", "class_cond", "use_scale_shift_norm"):
        assert getattr(got, f) == getattr(cfg, f), f
    assert got.channel_mults == cfg.channel_mults
    assert sorted(got.attention_ds) == sorted(d for d in cfg.attention_ds if d < cfg.size_multiple * 2)


def test_infer_config_rejects_foreign_state_dict():
    with pytest.raises(ADMStateDictError, match="not an ADM"):
        infer_config({"conv.weight": torch.empty(3, 3, 3, 3)})


# ---------------------------------------------------------------------------------------------------------------------
# a tiny model on CPU


@pytest.fixture(scope="module")
def tiny():
    return randomised(TINY)


@pytest.mark.parametrize("hw", [(32, 32), (48, 64)])
def test_tiny_forward_shape(tiny, hw):
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        out = tiny(x, torch.tensor([0.0, 999.0]))
    assert out.shape == (2, TINY.out_channels, *hw) == (2, 6, *hw)
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_tiny_timesteps_scalar_float_and_batched(tiny):
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        a = tiny(x, 250)
        b = tiny(x, torch.full((3,), 250.0))
        c = tiny(x, torch.tensor([250.5, 250.5, 250.5]))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # fractional steps change the embedding
    with pytest.raises(ValueError, match="timesteps"):
        tiny(x, torch.zeros(2))


def test_tiny_size_not_divisible(tiny):
    with pytest.raises(ValueError, match="divisible by 2"):
        tiny(torch.randn(1, 3, 33, 32), 10)


def test_state_dict_round_trip(tiny, tmp_path):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5.0, 600.0])
    with torch.no_grad():
        ref = tiny(x, t)
    # torch.save / torch.load
    buf = io.BytesIO()
    torch.save(tiny.state_dict(), buf)
    buf.seek(0)
    m1 = ADMUNet(TINY).eval()
    m1.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    # safetensors (the embedded priors' format), config rebuilt from its dict
    path = tmp_path / "tiny.safetensors"
    save_file(tiny.state_dict(), str(path), metadata={"config": json.dumps(TINY.to_dict())})
    m2 = ADMUNet(ADMConfig.from_dict(TINY.to_dict())).eval()
    m2.load_state_dict(load_file(str(path)), strict=True)
    m3 = ADMUNet.from_state_dict(load_file(str(path)), image_size=32, num_head_channels=32).eval()
    with torch.no_grad():
        for m in (m1, m2, m3):
            assert torch.equal(m(x, t), ref)


def test_wrong_shape_is_a_clear_error(tiny):
    sd = dict(tiny.state_dict())
    sd["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(RuntimeError, match=r"out\.2\.weight: checkpoint \[3, 32, 3, 3\] vs model \[6, 32, 3, 3\]"):
        ADMUNet(TINY).load_state_dict(sd, strict=True)
    sd = dict(tiny.state_dict())
    sd.pop("time_embed.0.bias")
    sd["extra"] = torch.zeros(1)
    with pytest.raises(ADMStateDictError, match="missing key.*time_embed.0.bias.*unexpected key.*extra"):
        ADMUNet(TINY).load_state_dict(sd)


def test_zero_initialised_outputs():
    """Fresh models start with residual branches off and a zero output (guided-diffusion's zero_module)."""
    model = ADMUNet(TINY)
    sd = model.state_dict()
    for k in ("out.2.weight", "input_blocks.1.0.out_layers.3.weight", "middle_block.1.proj_out.weight"):
        assert sd[k].abs().max() == 0, k
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16), 3).abs().max() == 0


@pytest.mark.slow  # the first torch.utils.checkpoint call imports torch._dynamo (seconds)
def test_gradient_checkpointing_same_gradients():
    cfg = TINY.replace(use_checkpoint=True)
    a, b = randomised(TINY, 1).train(), randomised(cfg, 1).train()
    x = torch.randn(2, 3, 16, 16)
    for m in (a, b):
        m(x, torch.tensor([1.0, 700.0])).square().mean().backward()
    for (k, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=k)


def test_fp16_torso_close_to_fp32():
    model = randomised(TINY.replace(use_fp16=True), 2)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x, 100)
        out = model.convert_to_fp16()(x, 100)
    assert out.dtype == torch.float32 and model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert (out - ref).abs().max() < 2e-2 * ref.abs().max()


# ---------------------------------------------------------------------------------------------------------------------
# pieces


@pytest.mark.parametrize("legacy", [True, False])
def test_attention_matches_explicit_formula(legacy):
    torch.manual_seed(0)
    heads, d, t = 3, 16, 20
    qkv = torch.randn(2, 3 * heads * d, t)
    if legacy:  # channels [head][q|k|v][d]
        q, k, v = qkv.reshape(2 * heads, 3 * d, t).split(d, dim=1)
    else:  # channels [q|k|v][head][d]
        q, k, v = (z.reshape(2 * heads, d, t) for z in qkv.chunk(3, dim=1))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
    want = torch.einsum("bts,bcs->bct", w, v).reshape(2, heads * d, t)
    torch.testing.assert_close(qkv_attention(qkv, heads, legacy), want)


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 7.0, 123.5])
    emb = timestep_embedding(t, 9)
    assert emb.shape == (3, 9) and torch.all(emb[:, -1] == 0)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[:, :4], torch.cos(t[:, None] * freqs))
    torch.testing.assert_close(emb[:, 4:8], torch.sin(t[:, None] * freqs))


def test_config_from_dict_types_and_defaults():
    d = {"image_size": 64, "num_channels": "64", "attention_resolutions": 16, "channel_mult": [1, 2, 2, 2],
         "learn_sigma": "true", "diffusion_steps": 1000, "model_path": "x.pt"}  # unknown keys are ignored
    cfg = ADMConfig.from_dict(d)
    got = (cfg.num_channels, cfg.attention_resolutions, cfg.channel_mult, cfg.learn_sigma)
    assert got == (64, "16", "1,2,2,2", True)
    assert cfg.out_channels == 6 and cfg.attention_ds == (4,) and cfg.size_multiple == 8
    assert ADMConfig.from_dict(cfg.to_dict()) == cfg
    assert ADMConfig(image_size=128).channel_mults == (1, 1, 2, 3, 4)
    assert ADMConfig(image_size=64).channel_mults == (1, 2, 3, 4)
    with pytest.raises(ADMConfigError, match="'num_res_blocks' must be int"):
        ADMConfig.from_dict({"num_res_blocks": "two"})
    with pytest.raises(TypeError, match="'use_scale_shift_norm' must be bool"):
        ADMConfig.from_dict({"use_scale_shift_norm": [True]})
    with pytest.raises(ADMConfigError, match="out_channels"):
        ADMConfig.from_dict({"learn_sigma": False, "out_channels": 6})
    with pytest.raises(ADMConfigError, match="multiple of 32"):
        ADMConfig(num_channels=48, channel_mult="1,2")
    with pytest.raises(ADMConfigError, match="no default channel_mult"):
        ADMConfig(image_size=48)
    # fewer GroupNorm groups (our own priors only) allow widths that 32 does not divide
    assert ADMConfig(num_channels=48, channel_mult="1,2", norm_groups=16).level_channels() == [48, 96]
    with pytest.raises(ADMConfigError, match="norm_groups must be positive"):
        ADMConfig(norm_groups=0)
    with pytest.raises(ADMConfigError, match="num_head_channels"):
        ADMConfig(num_channels=96, channel_mult="1", num_head_channels=64, attention_resolutions="")


def test_norm_groups_changes_only_the_normalisation():
    """``norm_groups`` (restore's one addition to guided-diffusion's arguments, default its fixed 32): the same keys,
    shapes and parameters, every GroupNorm with the given groups, and the forward pass equal to torch's own
    ``nn.GroupNorm`` with that many groups put in place of each norm."""
    base = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                num_head_channels=32, use_scale_shift_norm=True)
    assert ADMConfig(**base).norm_groups == 32 and ADMConfig(**base).to_dict()["norm_groups"] == 32
    torch.manual_seed(0)
    net32, net8 = ADMUNet(base), ADMUNet(dict(base, norm_groups=8))
    assert {k: v.shape for k, v in net32.state_dict().items()} == {k: v.shape for k, v in net8.state_dict().items()}
    for p in net32.parameters():  # non-zero everywhere, so that every norm shows in the output
        torch.nn.init.normal_(p, std=0.2)
    net8.load_state_dict(net32.state_dict())
    norms = [m for m in net8.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and {m.num_groups for m in norms} == {8}
    assert {m.num_groups for m in net32.modules() if isinstance(m, torch.nn.GroupNorm)} == {32}
    # reference: net32 with each of its norms replaced by torch's nn.GroupNorm(8, C) carrying the same affine weights
    ref = copy.deepcopy(net32)
    for m in list(ref.modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                gn = torch.nn.GroupNorm(8, child.num_channels)
                gn.load_state_dict(child.state_dict())
                setattr(m, child_name, gn)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        out8, out32, outref = net8(x, t), net32(x, t), ref(x, t)
    torch.testing.assert_close(out8, outref, rtol=1e-5, atol=1e-5)
    assert (out8 - out32).abs().max() > 1e-2  # the groups matter
