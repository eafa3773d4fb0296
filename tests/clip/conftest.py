from __future__ import annotations

import pytest
import torch

from unclip.clip import CLIP, CLIPConfig, TextConfig, VisionConfig, byte_tokenizer


def micro_config(**over) -> CLIPConfig:
    """A CLIP small enough to build and run in milliseconds, with the byte tokenizer's ids (EOT = 257)."""
    cfg = CLIPConfig(
        embed_dim=16,
        vision=VisionConfig(image_size=16, patch_size=4, width=32, layers=2, heads=2, mlp=64),
        text=TextConfig(vocab_size=259, context_length=40, width=32, layers=2, heads=2, mlp=64, eos_token_id=257),
    )
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
def make_micro_config():
    return micro_config


@pytest.fixture
def micro_clip() -> CLIP:
    torch.manual_seed(0)
    return CLIP(micro_config(), byte_tokenizer(40)).eval()
