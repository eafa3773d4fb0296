"""Building blocks of the ADM / GLIDE U-Net (Dhariwal & Nichol 2021 §3; Nichol et al. 2022 §2).

Residual blocks are driven by the timestep embedding through scale-shift normalization (ADM's
"AdaGN"); attention blocks let image positions attend to themselves and to context tokens (caption states
and the paper's 4 extra z_i tokens, §2.1), with keys and values of both in one softmax as in GLIDE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("group", "channel")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, ``(B,) -> (B, dim)`` in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class _ChannelNormNCHW(torch.autograd.Function):
    """LayerNorm over dim 1 of an NCHW tensor with a hand-written backward that keeps one full-size tensor.

    Autograd through the plain expression keeps both the centred input and the normalized one (two tensors the
    size of the activation per norm); this keeps x̂ = (x - mean) · rstd and the per-pixel rstd only. With
    g = dy · w, the LayerNorm gradient is dx = rstd · (g - mean_c(g) - x̂ · mean_c(g · x̂)), dw = Σ dy · x̂, db = Σ dy.
    The bundled upsampler's training step (16 images, 128 px, CPU): 0.77x the peak memory and 0.69x the time
    (benchmarks/channel_norm.py).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        # Two passes, the centred values reused: 0.35x the time of x.var(dim=1), whose reduction across the strided
        # channel dimension was a third of the upsampler's forward (benchmarks/channel_norm.py).
        centred = x - x.mean(dim=1, keepdim=True)
        rstd = torch.rsqrt((centred * centred).mean(dim=1, keepdim=True) + eps)
        normed = centred.mul_(rstd)  # in place: centred is not needed again
        ctx.save_for_backward(normed, rstd, weight)
        return normed * weight[:, None, None] + bias[:, None, None]

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        normed, rstd, weight = ctx.saved_tensors
        g = dy * weight[:, None, None]
        dx = rstd * (g - g.mean(dim=1, keepdim=True) - normed * (g * normed).mean(dim=1, keepdim=True))
        return dx, (dy * normed).sum(dim=(0, 2, 3)), dy.sum(dim=(0, 2, 3)), None


class ChannelNorm(nn.Module):
    """LayerNorm over channels at each pixel: a purely local normalization.

    GroupNorm pools statistics over the whole image, so a network using it computes something different on a
    crop than on the full image. The upsamplers train on crops and run at full size (§2.1); with this norm the
    two agree exactly away from the borders.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Channels-last: each pixel's channels are adjacent, so this is PyTorch's fused LayerNorm on a view
            # (0.07x the time of the reduction below; the output keeps the layout).
            normed = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
            return normed.permute(0, 3, 1, 2)
        return _ChannelNormNCHW.apply(x, self.weight, self.bias, self.eps)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        groups = math.gcd(32, channels)  # ADM's 32 groups, fewer for narrow test models
        return nn.GroupNorm(groups, channels, eps=1e-6)
    if kind == "channel":
        return ChannelNorm(channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the last layer of a residual branch so every block starts as the identity (ADM, App. A)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """norm → SiLU → conv → scale-shift by the embedding → SiLU → dropout → conv (zero-init), plus skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, norm: str) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = make_norm(norm, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over pixels whose keys and values also include the context tokens."""

    def __init__(self, channels: int, head_channels: int, context_dim: int | None, norm: str) -> None:
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"attention width {channels} is not a multiple of head_channels {head_channels}")
        self.heads = channels // head_channels
        self.norm = make_norm(norm, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.context_kv = nn.Linear(context_dim, 2 * channels) if context_dim else None
        self.proj = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        # Token-major (B, N, C), and the 1x1 convolution as the matrix product it is, so that q, k and v come out
        # with unit stride along the head dimension: with the channel-major layout (stride N there) PyTorch's SDPA
        # falls back from its fused CPU kernel to the math path, and the decoder's forward takes about 1.3x as long
        # (benchmarks/attention_layout.py). reshape, never view: an NCHW x has no token-major strides to view
        # through (a channels-last one does; models/memory_format.py).
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        qkv = F.linear(tokens, self.qkv.weight.squeeze(-1), self.qkv.bias)  # (B, N, 3C)
        q, k, v = qkv.reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
        mask = None
        if context is not None and self.context_kv is not None:
            ck, cv = self.context_kv(context).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            k, v = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
            if context_mask is not None:
                # Masked context tokens are dropped from the softmax; pixels always remain, so no row is empty.
                pixels = context_mask.new_ones(b, h * w)
                mask = torch.cat([context_mask, pixels], dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, d)
        out = out.permute(0, 1, 3, 2).reshape(b, c, h * w)
        return x + self.proj(out).reshape(b, c, h, w)  # x first: the sum takes x's memory layout


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
