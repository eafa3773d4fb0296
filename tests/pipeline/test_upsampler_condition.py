"""The upsampler sees its low-resolution input the way training corrupted it (App. C's blur), or clean on request."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from tiny_stack import tiny_pipeline

from unclip.data.degradations import blur_corrupt, corrupt, downsample
from unclip.diffusion import generators_from_seeds
from unclip.models.upsampler import inference_condition, upsampler_config


def _images(side: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, side, side, generator=g) * 2 - 1


@pytest.mark.parametrize("factor", [2, 4])
def test_trained_condition_of_a_downsampled_image_is_the_training_corruption(factor):
    # Inference must hand the network what training did for the same high-resolution image.
    cfg = upsampler_config(factor=factor, resolution=32, degradation="blur")
    high = _images(32)
    assert torch.equal(inference_condition(cfg, downsample(high, factor)), corrupt(high, factor, "blur"))


def test_clean_condition_and_random_or_no_degradation_leave_the_input_alone():
    low = _images(8)
    blur_cfg = upsampler_config(factor=4, resolution=32, degradation="blur")
    assert torch.equal(inference_condition(blur_cfg, low, "clean"), low)
    for kind in ("bsr", "none"):  # BSR is random robustness training, not a fixed transform to reproduce
        assert torch.equal(inference_condition(upsampler_config(factor=4, resolution=32, degradation=kind), low), low)
    assert not torch.allclose(inference_condition(blur_cfg, low), low)
    with pytest.raises(ValueError, match="condition must be one of trained, clean"):
        inference_condition(blur_cfg, low, "sharp")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(upsampler=True)


def _seen_by_network(pipe, low, condition):
    seen = []
    up = pipe.upsamplers[0]
    handle = up.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["low_res"].clone()), with_kwargs=True)
    try:
        s = dataclasses.replace(pipe.settings, upsampler_condition=condition)
        out = pipe.upsample(low, generators_from_seeds([1, 2]), s)
    finally:
        handle.remove()
    return seen, out


@pytest.mark.parametrize("condition", ["trained", "clean"])
def test_pipeline_upsampler_sees_the_chosen_condition_at_every_step(pipe, condition):
    assert pipe.upsamplers[0].config.degradation == "blur"  # the default, as App. C's first upsampler
    res = pipe.decoder.config.resolution
    low = F.avg_pool2d(_images(res), 3, 1, 1)
    seen, _ = _seen_by_network(pipe, low, condition)
    want = blur_corrupt(low) if condition == "trained" else low
    assert len(seen) == pipe.settings.upsampler_steps
    for x in seen:
        torch.testing.assert_close(x, want)


def test_trained_is_the_default_and_the_setting_is_validated(pipe):
    assert pipe.settings.upsampler_condition == "trained"
    with pytest.raises(ValueError, match="upsampler_condition must be one of trained, clean"):
        pipe("a star", upsampler_condition="sharp")
