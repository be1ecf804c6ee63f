"""Named ADM architectures: the two public 256² checkpoints and candidate sizes for our small embedded priors.

The public entries are the arguments their users pass to guided-diffusion's ``create_model`` (DPS
``configs/model_config.yaml`` and ``configs/imagenet_model_config.yaml``; the guided-diffusion README flags for
``256x256_diffusion_uncond.pt``); ``shared/data/adm_manifests/*.json`` lists the keys and shapes they produce.
"""

from __future__ import annotations

from .adm import ADMConfig

ADM_CONFIGS: dict[str, ADMConfig] = {
    # DPS / DAPS / RED-diff FFHQ prior (Choi et al., ILVR): 93.6 M parameters
    "ffhq_10m": ADMConfig(
        image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True,
        attention_resolutions="16", num_heads=4, num_head_channels=64, use_scale_shift_norm=True,
        resblock_updown=True,
    ),
    # OpenAI ImageNet 256 unconditional (Dhariwal & Nichol): 552.8 M parameters (run in fp16 by its authors)
    "256x256_diffusion_uncond": ADMConfig(
        image_size=256, num_channels=256, num_res_blocks=2, channel_mult="", learn_sigma=True,
        attention_resolutions="32,16,8", num_heads=4, num_head_channels=64, use_scale_shift_norm=True,
        resblock_updown=True,
    ),
}


# our own priors' architectures (priors.train.ARCHITECTURES) at their native size and channels
from .train import ARCHITECTURES  # noqa: E402

for _name, _size, _channels in (("cpu64", 64, 3), ("small64", 64, 3), ("small128", 128, 1)):
    ADM_CONFIGS[_name] = ADMConfig.from_dict(dict(ARCHITECTURES[_name], image_size=_size, in_channels=_channels))


def get_config(name: str) -> ADMConfig:
    try:
        return ADM_CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown ADM config {name!r}; known: {', '.join(sorted(ADM_CONFIGS))}") from None
