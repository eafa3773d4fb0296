"""ChannelNorm: a LayerNorm over each pixel's channels, in either memory layout, with the layout kept."""

import pytest
import torch
import torch.nn.functional as F

from unclip.models.unet_blocks import ChannelNorm, _ChannelNormNCHW

CL = torch.channels_last


def _norm(channels=6) -> ChannelNorm:
    norm = ChannelNorm(channels)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(channels, generator=g))
        norm.bias.copy_(torch.randn(channels, generator=g))
    return norm


def _written_out(norm, x):
    """Each pixel's channel vector standardised (population variance), then scaled and shifted per channel."""
    v = x.permute(0, 2, 3, 1).double()
    z = (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + norm.eps)
    return (z * norm.weight.double() + norm.bias.double()).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_channel_norm_is_layer_norm_per_pixel_in_either_layout(layout):
    norm = _norm()
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 6, 5, 7, generator=g) * 4 + 3).contiguous(memory_format=layout)  # far from standardised
    x.requires_grad_(True)
    out = norm(x)
    torch.testing.assert_close(out, _written_out(norm, x.detach()), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=layout)  # no silent switch of layout for the next convolution
    # Gradients agree with autograd through PyTorch's own layer_norm on the same values.
    w = torch.randn(out.shape, generator=g)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = F.layer_norm(ref_x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, norm.eps).permute(0, 3, 1, 2)
    (ref_grad,) = torch.autograd.grad((ref * w).sum(), ref_x)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


def test_channel_norm_is_local_to_each_pixel():
    norm = _norm()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 4, 4, generator=g)
    moved = x.clone()
    moved[0, 0, 0, 0] += 10  # one channel of one pixel changes (a shift of all its channels would not show)
    for layout in (torch.contiguous_format, CL):
        a, b = norm(x.contiguous(memory_format=layout)), norm(moved.contiguous(memory_format=layout))
        changed = (a - b).abs().amax(dim=1)[0] > 1e-6
        assert changed[0, 0] and changed.sum() == 1  # no statistic pooled across pixels, unlike GroupNorm


def test_hand_written_backward_passes_gradcheck_for_input_weight_and_bias():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    w = (1 + torch.randn(5, generator=g, dtype=torch.float64)).requires_grad_(True)
    b = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w, b: _ChannelNormNCHW.apply(x, w, b, 1e-6), (x, w, b))


def test_backward_keeps_one_activation_sized_tensor():
    # Autograd through the plain expression kept the centred and the normalized input (two activation-sized
    # tensors); the hand-written backward needs only the normalized one and a per-pixel scale.
    norm = _norm(8)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        norm(x).sum().backward()
    assert sum(n for n in saved if n >= x.numel()) == x.numel()
    assert sum(saved) < 1.2 * x.numel()
