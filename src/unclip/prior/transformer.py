"""The decoder-only transformer both priors share, and the checks on their caption inputs (§2.2).

Both priors read a sequence that starts with the caption's token states and ``z_t`` and continue with their own
tokens; each position may attend only to itself and earlier positions (a causal mask, as the paper's "decoder-only
Transformer with a causal attention mask"). Padded caption positions are hidden from every query except
themselves, so a padded query never has an empty row (which would turn softmax into NaN) and no real token ever
sees padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of integer timesteps (Vaswani et al. 2017), as the paper's models embed t."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=1)
    return emb if dim % 2 == 0 else F.pad(emb, (0, 1))


def causal_mask(valid: Tensor) -> Tensor:
    """``allowed[b, q, k]``: key ``k <= q`` and (``k`` is a real token or ``k == q``). ``valid`` is (B, S) bool."""
    s = valid.shape[1]
    idx = torch.arange(s, device=valid.device)
    lower = idx[None, :] <= idx[:, None]
    diag = idx[None, :] == idx[:, None]
    return lower[None] & (valid[:, None, :] | diag[None])


class Block(nn.Module):
    """Pre-norm attention + MLP block (GPT-2 ordering, which trains stably without warm-up tricks)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.dropout = dropout

    def forward(self, h: Tensor, allowed: Tensor) -> Tensor:
        b, s, w = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], dropout_p=p)
        h = h + F.dropout(self.proj(a.transpose(1, 2).reshape(b, s, w)), p, self.training)
        return h + F.dropout(self.mlp(self.ln2(h)), p, self.training)


class CausalTransformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"transformer width {width} must be divisible by its {heads} heads")
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        allowed = causal_mask(valid)
        for block in self.blocks:
            h = block(h, allowed)
        return self.ln_f(h)


def check_caption(z_t: Tensor, tokens: Tensor, mask: Tensor, *, embed_dim: int, text_width: int, text_len: int) -> None:
    """Raise ValueError naming the offending value when the caption inputs do not fit the prior's config."""
    if not isinstance(z_t, Tensor) or z_t.ndim != 2 or z_t.shape[1] != embed_dim:
        shape = tuple(z_t.shape) if isinstance(z_t, Tensor) else type(z_t).__name__
        raise ValueError(f"z_t must have shape (B, {embed_dim}) (the prior's embed_dim), got {shape}")
    b = z_t.shape[0]
    if not isinstance(tokens, Tensor) or tokens.ndim != 3 or tokens.shape[2] != text_width:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"caption token states must have shape (B, L, {text_width}) (text_width), got {shape}")
    if tokens.shape[0] != b:
        raise ValueError(f"caption token states have batch {tokens.shape[0]} but z_t has batch {b}")
    if not 1 <= tokens.shape[1] <= text_len:
        raise ValueError(f"captions must have between 1 and {text_len} token states (text_len), got {tokens.shape[1]}")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(tokens.shape[:2]):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"caption mask must be a bool tensor of shape {tuple(tokens.shape[:2])}, got {got}")
