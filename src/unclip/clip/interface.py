"""The CLIP interface every backend implements (DESIGN.md §2, layer 2), and image input checking.

unCLIP needs three things from CLIP (Ramesh et al. 2022, §2): the text embedding z_t, the text tower's token
states (the prior and decoder attend to them) and the image embedding z_i. Any object with these methods is a
CLIP to the rest of the project: our own :class:`unclip.clip.model.CLIP` (also used for converted standard
checkpoints) and the locked-tower LiT model.

Images: a float tensor ``(B, 3, H, W)`` with values in [-1, 1] (the project's image convention), or a uint8
tensor / array ``(B, 3, H, W)`` or ``(B, H, W, 3)`` with values 0..255. Each backend applies its own pixel
statistics inside. Images of another size are resized so the short side fits, then centre-cropped (CLIP's own
preprocessing, Radford et al. 2021); anything else (wrong channel count, rank, dtype, range) is a ValueError.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class TextEncoding(NamedTuple):
    """``embedding`` z_t ``(B, D)``; ``token_states`` ``(B, L, W)`` from the text tower's last layer (after its
    final LayerNorm); ``mask`` bool ``(B, L)``, True at real tokens (BOS, the caption, EOT), False at padding."""

    embedding: Tensor
    token_states: Tensor
    mask: Tensor


@runtime_checkable
class CLIPEncoder(Protocol):
    embed_dim: int
    image_size: int

    def encode_text(self, captions: list[str], normalize: bool = True) -> TextEncoding: ...

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor: ...


def prepare_images(images: Tensor | np.ndarray, size: int) -> Tensor:
    """Checked float32 ``(B, 3, size, size)`` in [-1, 1] from any accepted image batch (see module docs)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch tensor or numpy array, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (B, 3, H, W) or (B, H, W, 3), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[1] != 3 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
        x = images.float() / 127.5 - 1.0
    elif images.is_floating_point():
        x = images.float()
        # One transfer for the three checks (x may carry a gradient, a loss's): on an accelerator each read is a wait.
        finite, lo, hi = torch.stack([torch.isfinite(x).all().float(), x.detach().min(), x.detach().max()]).tolist()
        if not finite:
            raise ValueError("images contain NaN or infinite values")
        if lo < -1.001 or hi > 1.001:
            raise ValueError(
                f"float images must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}] (uint8 0..255 is also accepted)"
            )
    else:
        raise ValueError(f"images must be float in [-1, 1] or uint8, got dtype {images.dtype}")
    if x.shape[1] != 3:
        raise ValueError(f"images must have 3 channels (RGB) in dim 1, got shape {tuple(images.shape)}")
    if x.shape[0] == 0:
        raise ValueError("images is an empty batch")
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    return x.contiguous()
