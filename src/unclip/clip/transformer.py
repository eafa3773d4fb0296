"""The pre-LayerNorm transformer both CLIP towers are made of (Radford et al. 2021, §2.4).

CLIP uses the GPT-2 / ViT block: LayerNorm before attention and before the MLP, residual adds after. The MLP
activation is a config value because OpenAI's checkpoints use "quick GELU" (x·σ(1.702x)), a cheap GELU
approximation they trained with; loading their weights with exact GELU would shift every activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("quick_gelu", "gelu")


def activation(name: str, x: Tensor) -> Tensor:
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return F.gelu(x)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection (one matmul instead of three)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp: int, act: str, eps: float) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
        self.act = act
        self.ln1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.ln2 = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        x = x + self.attn(self.ln1(x), causal)
        return x + self.fc2(activation(self.act, self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp: int, act: str, eps: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp, act, eps) for _ in range(layers))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.blocks:
            x = block(x, causal)
        return x
