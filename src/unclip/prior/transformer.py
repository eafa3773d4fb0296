"""The decoder-only transformer both priors share, and the checks on their caption inputs (§2.2).

Both priors read a sequence that starts with the caption's token states and ``z_t`` and continue with their own
tokens; each position may attend only to itself and earlier positions (a causal mask, as the paper's "decoder-only
Transformer with a causal attention mask"). Padded caption positions are hidden from every query except
themselves, so a padded query never has an empty row (which would turn softmax into NaN) and no real token ever
sees padding.

Because of the causal mask, a position's keys and values never change once it is computed; the AR prior's
sampler therefore keeps them in a :class:`KVCache` and feeds one new token per step (incremental decoding)
instead of re-running the whole prefix for every code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def causal_mask(valid: Tensor, start: int = 0) -> Tensor:
    """``allowed[b, q, k]``: key ``k <= q`` and (``k`` is a real token or ``k == q``). ``valid`` is (B, S) bool.

    Rows are the queries at positions ``start .. S - 1`` (all of them by default; the newest ones when decoding
    incrementally), columns all S keys: shape (B, S - start, S).
    """
    s = valid.shape[1]
    keys = torch.arange(s, device=valid.device)
    queries = keys[start:]
    lower = keys[None, :] <= queries[:, None]
    diag = keys[None, :] == queries[:, None]
    return lower[None] & (valid[:, None, :] | diag[None])


@dataclass
class KVCache:
    """Keys and values of the positions decoded so far, per block, in buffers sized for the whole sequence.

    ``keys[i]`` and ``values[i]`` are (B, heads, max_len, head_dim); positions ``0 .. length - 1`` are filled;
    ``valid`` (B, max_len) marks which of them are real tokens (padding is hidden from later queries).
    """

    keys: list[Tensor]
    values: list[Tensor]
    valid: Tensor
    length: int = 0

    @property
    def max_len(self) -> int:
        return int(self.valid.shape[1])


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

    def forward(self, h: Tensor, allowed: Tensor, kv: tuple[Tensor, Tensor] | None = None, start: int = 0) -> Tensor:
        """``h`` (B, s, W) holds positions ``start .. start + s - 1``; ``allowed`` is (B, s, keys).

        With ``kv`` (a block's cache buffers), this chunk's keys and values are written at ``start`` and the
        queries attend over every cached position up to their own; without it, ``h`` is the whole sequence.
        """
        b, s, w = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if kv is not None:
            kv[0][:, :, start : start + s] = k
            kv[1][:, :, start : start + s] = v
            k, v = kv[0][:, :, : start + s], kv[1][:, :, : start + s]
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
        self.width, self.heads = width, heads

    def forward(self, h: Tensor, valid: Tensor, cache: KVCache | None = None) -> Tensor:
        """Outputs for ``h`` (B, s, W). Without ``cache``, ``h`` is the whole sequence and ``valid`` (B, s) its
        real-token mask. With one, ``h`` and ``valid`` continue the cached positions, whose keys and values are
        reused, and the new positions' keys and values are appended (for sampling; gradients are not needed)."""
        if cache is None:
            allowed = causal_mask(valid)
            for block in self.blocks:
                h = block(h, allowed)
            return self.ln_f(h)
        start, s = cache.length, h.shape[1]
        if start + s > cache.max_len:
            raise ValueError(f"the KV cache holds {cache.max_len} positions; cannot add {s} after {start}")
        cache.valid[:, start : start + s] = valid
        allowed = causal_mask(cache.valid[:, : start + s], start)
        for block, k, v in zip(self.blocks, cache.keys, cache.values, strict=True):
            h = block(h, allowed, (k, v), start)
        cache.length = start + s
        return self.ln_f(h)

    def new_cache(self, batch: int, max_len: int, *, dtype: torch.dtype, device: torch.device) -> KVCache:
        """Empty buffers for ``max_len`` positions of ``batch`` sequences."""
        shape = (batch, self.heads, max_len, self.width // self.heads)
        return KVCache(
            [torch.zeros(shape, dtype=dtype, device=device) for _ in self.blocks],
            [torch.zeros(shape, dtype=dtype, device=device) for _ in self.blocks],
            torch.zeros(batch, max_len, dtype=torch.bool, device=device),
        )


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
