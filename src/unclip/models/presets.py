"""Named network shapes for the decoder and the upsamplers (STYLE.md practice 7: presets are plain Python).

A decoder preset fixes the U-Net; the conditioning sizes (``clip_dim``, ``text_dim``) come from the CLIP it
is trained with, so presets are functions of them.
"""

from __future__ import annotations

from unclip.models.decoder import DecoderConfig, decoder_config
from unclip.models.upsampler import UpsamplerConfig, upsampler_config

# U-Net shapes: tiny for tests, small for Shapes world at 64 px on one GPU, base for real data.
DECODER_SHAPES: dict[str, dict] = {
    "tiny": {"model_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_levels": (1,),
             "head_channels": 16},
    "mini": {"model_channels": 32, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "attention_levels": (2,),
             "head_channels": 32},
    # The bundled model's 32 px decoder: trained on a GPU, sampled on a CPU by `make demo` (about 4x mini's cost).
    "compact": {"model_channels": 48, "channel_mult": (1, 2, 3), "num_res_blocks": 2, "attention_levels": (1, 2),
                "head_channels": 48},
    "small": {"model_channels": 64, "channel_mult": (1, 2, 3, 4), "num_res_blocks": 2, "attention_levels": (2, 3),
              "head_channels": 32},
    "base": {"model_channels": 192, "channel_mult": (1, 2, 3, 4), "num_res_blocks": 3, "attention_levels": (1, 2, 3),
             "head_channels": 64, "dropout": 0.1},
}  # fmt: skip

UPSAMPLER_SHAPES: dict[str, dict] = {
    "tiny": {"model_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1},
    "mini": {"model_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1},
    "compact": {"model_channels": 32, "channel_mult": (1, 2, 4), "num_res_blocks": 1},
    "small": {"model_channels": 48, "channel_mult": (1, 2, 4), "num_res_blocks": 2},
    "base": {"model_channels": 128, "channel_mult": (1, 2, 3, 4), "num_res_blocks": 2},
}

# §2.1 / App. C: 64→256 with Gaussian-blur corruption and a cosine schedule; 256→1024 with BSR and linear.
UPSAMPLER_STAGES: dict[int, dict] = {
    256: {"schedule": "cosine", "degradation": "blur"},
    1024: {"schedule": "linear", "degradation": "bsr"},
}


def _shape(table: dict[str, dict], kind: str, name: str) -> dict:
    if name not in table:
        raise ValueError(f"unknown {kind} preset {name!r}; expected one of {', '.join(table)}")
    return table[name]


def decoder_preset(name: str, *, clip_dim: int, text_dim: int | None, resolution: int = 64) -> DecoderConfig:
    return decoder_config(
        clip_dim=clip_dim, text_dim=text_dim, resolution=resolution, **_shape(DECODER_SHAPES, "decoder", name)
    )


def upsampler_preset(name: str, *, resolution: int = 256, factor: int = 4) -> UpsamplerConfig:
    stage = UPSAMPLER_STAGES.get(resolution, UPSAMPLER_STAGES[256])
    return upsampler_config(
        factor=factor, resolution=resolution, **stage, **_shape(UPSAMPLER_SHAPES, "upsampler", name)
    )
