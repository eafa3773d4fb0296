"""A batch of Shapes-world scenes as a model-ready tensor: for sample grids, evaluations and the demo."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .world import ShapesWorld


def render_batch(n: int, resolution: int, split: str = "test", seed: int = 0) -> tuple[list, torch.Tensor]:
    """The first ``n`` scenes of ``split`` and their images, (n, 3, resolution, resolution) float in [-1, 1].

    Sizes below the renderer's 32 px are rendered at 32 px and area-downsampled.
    """
    world = ShapesWorld(split=split, seed=seed, resolution=max(32, resolution))
    samples = [world[i] for i in range(n)]
    return samples, images_tensor(samples, resolution)


def images_tensor(samples: list, resolution: int) -> torch.Tensor:
    """The samples' images as (n, 3, resolution, resolution) float in [-1, 1] (area-downsampled if smaller)."""
    x = torch.stack([torch.from_numpy(np.asarray(s.image).copy()) for s in samples]).permute(0, 3, 1, 2)
    x = x.float() / 127.5 - 1
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=resolution, mode="area")
    return x
