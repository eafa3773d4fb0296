"""``UnCLIPPipeline.set_memory_format``: channels-last decoder and upsamplers give the same images, and undo cleanly."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_stack import FAST, tiny_pipeline

PROMPTS = ["a red circle", "two blue squares"]


def conv_weights(net):
    return [p for p in net.parameters() if p.ndim == 4]


# From T itself an eps-model's x0 estimate multiplies any rounding difference by 1 / sqrt(alpha_bar_T) ≈ 2e4
# (docs/pipeline.md, "Why the inversion stops at 0.95 T"), so the two layouts' 1e-7 differences in the convolutions
# would show in whichever pixels the clamp leaves free; from 0.95 T the factor is 13.
STRENGTH = {"upsampler_strength": 0.95}


def test_channels_last_pipeline_gives_the_same_images_and_switches_back():
    pipe = tiny_pipeline()
    ref = pipe(PROMPTS, seed=3, **STRENGTH)
    assert pipe.set_memory_format(True) is pipe
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights(pipe.decoder))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for up in pipe.upsamplers for p in conv_weights(up))
    assert not pipe.prior._forward_pre_hooks and not pipe.clip._forward_pre_hooks  # not convolutional: untouched
    out = pipe(PROMPTS, seed=3, **STRENGTH)
    assert out.tensors.shape == (2, 3, 32, 32) and out.tensors.is_contiguous()
    assert ref.tensors.std() > 0.1  # real images, not a constant the comparison would pass trivially
    torch.testing.assert_close(out.tensors, ref.tensors, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.z_i, ref.z_i, rtol=0, atol=0)  # the prior never saw the switch
    back = pipe.set_memory_format(False)(PROMPTS, seed=3, **STRENGTH)
    assert all(p.is_contiguous() for p in conv_weights(pipe.decoder))
    assert torch.equal(back.tensors, ref.tensors)


def test_channels_last_with_bf16_and_inversion():
    from unclip.pipeline import invert

    pipe = tiny_pipeline(upsampler=False, settings=dataclasses.replace(FAST, inversion_refine=0))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    _, x_T_ref = invert(pipe, x)
    _, x_T = invert(pipe.set_memory_format(True), x)
    torch.testing.assert_close(x_T, x_T_ref, rtol=1e-4, atol=1e-4)  # DDIM inversion through the decoder
    low = pipe.set_precision("bf16")(PROMPTS, seed=1).tensors
    full = pipe.set_precision("fp32")(PROMPTS, seed=1).tensors
    assert 0 < (low - full).abs().mean() < 0.1  # both switches at once: autocast ran, and stayed close


def test_non_boolean_switch_is_refused():
    with pytest.raises(ValueError, match="channels_last must be True or False, got 'on'"):
        tiny_pipeline(upsampler=False).set_memory_format("on")


def test_generate_command_takes_channels_last(tmp_path):
    from unclip.cli.main import main

    tiny_pipeline().save_pretrained(tmp_path / "m")
    args = ["generate", "a red circle", "--model", str(tmp_path / "m"), "--n", "1"]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    assert main([*args, "--out", str(tmp_path / "cl"), "--channels-last"]) == 0
    (ref,) = sorted((tmp_path / "ref").glob("image*.png"))
    (got,) = sorted((tmp_path / "cl").glob("image*.png"))
    a, b = (np.asarray(Image.open(p), dtype=np.int16) for p in (ref, got))
    assert a.shape == (32, 32, 3) and np.abs(a - b).max() <= 1  # equal up to a rounding at a .5 boundary
