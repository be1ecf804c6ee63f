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
    # candidates for the small priors embedded in the package (64×64 training crops, ε-prediction only):
    # 4 levels 64→32→16→8 with attention at 16² and 8²; see benchmarks/priors_speed.py for their cost.
    "small64_c64": ADMConfig(
        image_size=64, num_channels=64, num_res_blocks=2, channel_mult="1,2,2,2", learn_sigma=False,
        attention_resolutions="16,8", num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
    ),
    "small64_c32": ADMConfig(
        image_size=64, num_channels=32, num_res_blocks=2, channel_mult="1,2,2,2", learn_sigma=False,
        attention_resolutions="16,8", num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
    ),
}


def get_config(name: str) -> ADMConfig:
    try:
        return ADM_CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown ADM config {name!r}; known: {', '.join(sorted(ADM_CONFIGS))}") from None
