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


#: named architectures for our small priors (guided-diffusion argument names)
ARCHITECTURES: dict[str, dict] = {
    # a few hundred thousand parameters: tests and smoke runs
    "tiny": dict(num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="",
                 num_head_channels=32, use_scale_shift_norm=True, resblock_updown=False),
    # what 2 CPU cores can train in a session (1.6 M parameters, ~13 img/s on one core); 8 GroupNorm groups, not
    # guided-diffusion's 32: at 32 channels, 32 groups normalise each channel alone and the samples of a face prior
    # came out with strong colour casts, where 8 groups give natural colours at equal restoration quality for equal
    # compute (the faces64 A/B in docs/priors.md, sessions 11-12)
    "cpu64": dict(num_channels=32, num_res_blocks=1, channel_mult="1,2,2,2", attention_resolutions="8",
                  num_head_channels=32, use_scale_shift_norm=True, resblock_updown=False, norm_groups=8),
    # the embedded 64×64 priors when a GPU trains them
    # convolutional (only the ADM middle block attends, over any number of tokens): trained on random crops, used on whole images of any size that 8 divides
    # (natural photographs, and the 128×128 MRI / CT priors trained on 64×64 crops of their images)
    "cpu-conv": dict(num_channels=32, num_res_blocks=1, channel_mult="1,2,2,2", attention_resolutions="",
                     num_head_channels=32, use_scale_shift_norm=True, resblock_updown=False),
    "small64": dict(num_channels=64, num_res_blocks=2, channel_mult="1,2,2,2", attention_resolutions="16,8",
                    num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True),
    # the embedded 128×128 grey priors (MRI, CT)
    "small128": dict(num_channels=64, num_res_blocks=2, channel_mult="1,1,2,2,4", attention_resolutions="16,8",
                     num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True),
}


# our own priors' architectures at their native size and channels

for _name, _size, _channels in (("cpu64", 64, 3), ("small64", 64, 3), ("small128", 128, 1)):
    ADM_CONFIGS[_name] = ADMConfig.from_dict(dict(ARCHITECTURES[_name], image_size=_size, in_channels=_channels))


def get_config(name: str) -> ADMConfig:
    try:
        return ADM_CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown ADM config {name!r}; known: {', '.join(sorted(ADM_CONFIGS))}") from None
