"""The U-Net's attention block: the maths against an explicit softmax, and the fused SDPA kernel it is laid out for."""

import math

import torch

from unclip.models.unet_blocks import AttentionBlock


def _block() -> AttentionBlock:
    torch.manual_seed(0)
    block = AttentionBlock(48, 16, context_dim=12, norm="group").eval()
    with torch.no_grad():
        block.proj.weight.normal_(0, 0.2)  # zero-initialised: the attention branch would add nothing
    return block


def _reference(block: AttentionBlock, x, context, mask):
    """Attention written out: per head, softmax(q·k / sqrt(d)) over [context tokens kept by the mask, pixels]."""
    b, c, h, w = x.shape
    heads, d = block.heads, c // block.heads
    tokens = block.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
    q, k, v = (tokens @ block.qkv.weight[:, :, 0].T + block.qkv.bias).split(c, dim=-1)
    ck, cv = (block.context_kv(context)).split(c, dim=-1)
    out = torch.empty(b, h * w, c)
    for i in range(b):
        keep = mask[i]
        keys, values = torch.cat([ck[i][keep], k[i]]), torch.cat([cv[i][keep], v[i]])
        for j in range(heads):
            s = slice(j * d, (j + 1) * d)
            weights = torch.softmax(q[i][:, s] @ keys[:, s].T / math.sqrt(d), dim=-1)
            out[i][:, s] = weights @ values[:, s]
    y = out @ block.proj.weight[:, :, 0].T + block.proj.bias
    return x + y.transpose(1, 2).reshape(b, c, h, w)


def test_attention_equals_the_softmax_written_out():
    block = _block()
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 48, 5, 6, generator=g), torch.randn(2, 4, 12, generator=g)
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    with torch.no_grad():
        got, ref = block(x, ctx, mask), _reference(block, x, ctx, mask)
        assert (ref - x).abs().max() > 0.05  # the attention branch adds something to compare
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        other = mask.clone()
        other[0, 1] = True  # a masked token really is left out: letting it in changes the output
        assert (block(x, ctx, other) - got)[0].abs().max() > 1e-3


def test_attention_runs_the_fused_cpu_kernel_not_the_math_path():
    block = _block()
    g = torch.Generator().manual_seed(2)
    x, ctx = torch.randn(3, 48, 8, 8, generator=g), torch.randn(3, 5, 12, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad(), torch.profiler.profile() as prof:
            block(x.contiguous(memory_format=layout), ctx, mask)
        kernels = {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}
        assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels, kernels
        assert "aten::_scaled_dot_product_attention_math" not in kernels, kernels
