"""Shared synthetic data for the prior tests: a caption world where z_i is a fixed linear map of z_t plus noise.

A plain module (not conftest.py), so it cannot collide with another test folder's conftest when the whole suite
runs in one session.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def synthetic_pairs(n: int, dim: int = 16, width: int = 24, length: int = 6, seed: int = 0, noise: float = 0.05):
    """(z_i, z_t, tokens, mask): unit z_t; z_i = normalize(A z_t + noise) with A fixed (seed 1234); tokens are
    a fixed random lift of z_t with a random number of padded positions, so the caption carries the same signal."""
    g_fixed = torch.Generator().manual_seed(1234)
    a = torch.linalg.qr(torch.randn(dim, dim, generator=g_fixed))[0]  # a rotation: z_t alone is a poor guess
    lift = torch.randn(dim, length * width, generator=g_fixed) / dim**0.5
    g = torch.Generator().manual_seed(seed)
    z_t = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    z_i = F.normalize(z_t @ a.T + noise * torch.randn(n, dim, generator=g), dim=1)
    tokens = (z_t @ lift).view(n, length, width)
    lengths = torch.randint(2, length + 1, (n,), generator=g)
    mask = torch.arange(length)[None] < lengths[:, None]
    return z_i, z_t, tokens, mask
