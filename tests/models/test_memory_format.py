"""Channels-last as a switch: the same numbers in another layout, kept through every block, and undone cleanly."""

import pytest
import torch
from test_unet import inputs, tiny_decoder

from unclip.models.memory_format import has_conv_weights, is_channels_last, set_channels_last
from unclip.models.presets import UPSAMPLER_SHAPES
from unclip.models.unet_blocks import AttentionBlock
from unclip.models.upsampler import Upsampler, upsampler_config

CL = torch.channels_last


def tiny_upsampler(noise_aug=False):
    torch.manual_seed(0)
    up = Upsampler(upsampler_config(factor=2, resolution=16, noise_aug=noise_aug, **UPSAMPLER_SHAPES["tiny"]))
    with torch.no_grad():
        for p in up.parameters():  # zero-initialised output layers would make every output 0
            p.add_(0.05 * torch.randn_like(p))
    return up.eval()


def decoder_call(d, i):
    return d(i["x"], i["t"], i["z_i"], text=i["text"], text_mask=i["text_mask"])


def test_decoder_output_equals_the_contiguous_one():
    d, i = tiny_decoder(), inputs()
    ref = decoder_call(d, i)
    assert set_channels_last(d) is d and is_channels_last(d)
    assert all(p.is_contiguous(memory_format=CL) for p in d.parameters() if p.ndim == 4)
    assert not i["x"].is_contiguous(memory_format=CL)  # the hook, not the caller, converts x_t
    out = decoder_call(d, i)
    assert out.is_contiguous()  # handed back in the default layout: samplers never see NHWC
    assert ref.abs().max() > 0.1  # a network that ignored its input would make the comparison empty
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_upsampler_output_equals_the_contiguous_one():
    up = tiny_upsampler(noise_aug=True)
    g = torch.Generator().manual_seed(2)
    x, low = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 8, 8, generator=g).clamp(-1, 1)
    t, aug = torch.tensor([3, 700]), torch.tensor([0, 250])
    ref = up(x, t, low_res=low, aug_level=aug)
    set_channels_last(up)
    out = up(x, t, low_res=low, aug_level=aug)  # the low-res condition arrives as a keyword
    assert ref.abs().max() > 0.1 and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_every_activation_inside_the_unet_stays_channels_last():
    # One block handing back NCHW (a view/permute in attention, a concatenation) would make every later
    # convolution transpose again: correct numbers, none of the speed.
    d, i = tiny_decoder(), inputs()
    set_channels_last(d)
    seen, leaks = [], []

    def check(module, args, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[1:]) > 1:
            seen.append(type(module).__name__)
            if not out.is_contiguous(memory_format=CL):
                leaks.append(type(module).__name__)

    handles = [m.register_forward_hook(check) for m in d.unet.modules() if m is not d.unet]
    decoder_call(d, i)
    for h in handles:
        h.remove()
    assert {"AttentionBlock", "ResBlock", "Downsample", "Upsample", "GroupNorm"} <= set(seen)
    assert leaks == []


def test_attention_block_on_channels_last_input_with_masked_context():
    torch.manual_seed(0)
    block = AttentionBlock(32, 16, context_dim=12, norm="group")
    with torch.no_grad():
        block.proj.weight.normal_(0, 0.2)  # zero-initialised: the attention branch would add nothing
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 32, 5, 6, generator=g), torch.randn(2, 4, 12, generator=g)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    ref = block(x, ctx, mask)
    out = block.to(memory_format=CL)(x.contiguous(memory_format=CL), ctx, mask)
    assert (ref - x).abs().max() > 0.01 and out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_switching_back_restores_the_default_layout_and_state_dict():
    d = tiny_decoder()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    set_channels_last(d)
    set_channels_last(d)  # twice: still one pair of hooks
    assert len(d._forward_pre_hooks) == 1 and len(d._forward_hooks) == 1
    assert set(d.state_dict()) == set(before)
    set_channels_last(d, False)
    assert not is_channels_last(d) and not d._forward_pre_hooks and not d._forward_hooks
    assert all(v.is_contiguous() and torch.equal(v, before[k]) for k, v in d.state_dict().items())


def test_channels_last_survives_a_save_and_load(tmp_path):
    from unclip.models.checkpoint import from_pretrained, save_pretrained

    d = set_channels_last(tiny_decoder())
    save_pretrained(d, tmp_path / "d")  # safetensors refuses non-contiguous tensors unless we convert
    back = from_pretrained(tmp_path / "d", "decoder")
    for k, v in back.state_dict().items():
        assert torch.equal(v, d.state_dict()[k]), k


def test_networks_without_2d_convolutions_and_non_bool_switches_are_refused():
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Conv1d(4, 4, 1))
    assert not has_conv_weights(mlp)
    with pytest.raises(ValueError, match="Sequential has no 4-D"):
        set_channels_last(mlp)
    with pytest.raises(ValueError, match="True or False, got 'yes'"):
        set_channels_last(tiny_upsampler(), "yes")
