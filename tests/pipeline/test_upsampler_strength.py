"""The upsampler's SDEdit start: strength 1 is the paper's pure-noise path, small strengths stay near the bicubic."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from tiny_stack import tiny_pipeline

from unclip.diffusion import generators_from_seeds


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(upsampler=True)


def _low(pipe):
    g = torch.Generator().manual_seed(0)
    res = pipe.decoder.config.resolution
    return F.avg_pool2d(torch.rand(2, 3, res, res, generator=g) * 2 - 1, 3, 1, 1)  # smooth, in [-1, 1]


def test_strength_one_is_the_pure_noise_path(pipe):
    low = _low(pipe)
    default = pipe.upsample(low, generators_from_seeds([1, 2]))
    full = pipe.upsample(low, generators_from_seeds([1, 2]), dataclasses.replace(pipe.settings, upsampler_strength=1.0))
    assert torch.equal(default, full)


def test_small_strength_stays_near_the_bicubic_and_large_strength_does_not(pipe):
    low = _low(pipe)
    res = pipe.upsamplers[0].config.resolution
    bicubic = F.interpolate(low, size=(res, res), mode="bicubic").clamp(-1, 1)
    err = {}
    for strength in (0.01, 1.0):
        s = dataclasses.replace(pipe.settings, upsampler_strength=strength, upsampler_steps=4)
        err[strength] = (pipe.upsample(low, generators_from_seeds([1, 2]), s) - bicubic).abs().mean().item()
    assert err[0.01] < 0.05 < err[1.0]  # the untrained network only touches what the small noise perturbed


def test_strength_is_validated(pipe):
    with pytest.raises(ValueError, match="upsampler_strength must be a number in"):
        pipe("a star", upsampler_strength=0.0)
