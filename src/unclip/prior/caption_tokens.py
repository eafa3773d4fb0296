"""CLIP token states fitted to a prior's fixed caption length (the priors train on one length, §2.2)."""

from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import Tensor


def fit_tokens(tokens: Tensor, mask: Tensor, text_len: int) -> tuple[Tensor, Tensor]:
    """Pad ``(B, L, W)`` token states and their ``(B, L)`` mask to ``text_len`` positions, or cut them.

    Cutting drops only padding unless a caption really is longer than ``text_len`` tokens; then it is truncated
    with a warning (never an index error), as CLIP truncates captions longer than its context.
    """
    if tokens.shape[1] > text_len:
        if bool(mask[:, text_len:].any()):
            warnings.warn(f"captions longer than the prior's {text_len} tokens are cut", stacklevel=2)
        return tokens[:, :text_len], mask[:, :text_len]
    pad = text_len - tokens.shape[1]
    return F.pad(tokens, (0, 0, 0, pad)), F.pad(mask, (0, pad))
