"""The frozen CLIP a stage reads (``model.clip``: the decoder's condition encoder, the noised tower's teacher)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class FrozenCLIPs:
    """Each folder's CLIP loaded once, in eval mode without gradients, checked once by the stage, then moved to the
    step's device on every call."""

    def __init__(self, needed_by: str) -> None:
        self.needed_by = needed_by  # "decoder training", named in the error for a missing folder
        self._clips: dict[str, nn.Module] = {}

    def get(self, folder: str, device: torch.device | str, check: Callable[[nn.Module], None]) -> nn.Module:
        if not folder:
            raise ValueError(f"{self.needed_by} needs a trained CLIP: pass --set model.clip=CLIP_DIR")
        if folder not in self._clips:
            from unclip.clip import load_clip

            clip = load_clip(folder).eval().requires_grad_(False)
            check(clip)
            self._clips[folder] = clip
        return self._clips[folder].to(device)
