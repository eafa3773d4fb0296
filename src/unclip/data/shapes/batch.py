"""A batch of Shapes-world scenes as a model-ready tensor: for sample grids, evaluations and the demo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .render import render
from .world import ShapesWorld


def render_batch(n: int, resolution: int, split: str = "test", seed: int = 0) -> tuple[list, torch.Tensor]:
    """The first ``n`` scenes of ``split`` and their images, (n, 3, resolution, resolution) float in [-1, 1].

    Sizes below the renderer's 32 px are rendered at 32 px and area-downsampled.
    """
    world = ShapesWorld(split=split, seed=seed, resolution=max(32, resolution))
    samples = [world[i] for i in range(n)]
    return samples, images_tensor(samples, resolution)


def first_samples(
    n: int, resolution: int, keep: Callable[[Any], bool], what: str, split: str = "test", seed: int = 0
) -> list:
    """The first ``n`` samples of ``split`` that ``keep`` accepts (``what`` names them in the error raised when the
    split holds too few: a predicate almost nothing passes would otherwise search forever)."""
    world = ShapesWorld(split=split, seed=seed, resolution=max(32, resolution))
    picked, i = [], 0
    while len(picked) < n:
        if i > 100 * n + 1000:
            raise ValueError(f"split {split!r} has too few {what} for n={n}")
        sample = world[i]
        i += 1
        if keep(sample):
            picked.append(sample)
    return picked


def images_tensor(samples: list, resolution: int) -> torch.Tensor:
    """The samples' images as (n, 3, resolution, resolution) float in [-1, 1] (area-downsampled if smaller)."""
    return _as_tensor([s.image for s in samples], resolution)


def scenes_tensor(scenes: list, resolution: int) -> torch.Tensor:
    """Scene graphs rendered as :func:`images_tensor` gives samples (below 32 px: rendered at 32, downsampled)."""
    return _as_tensor([render(s, max(32, resolution)) for s in scenes], resolution)


def _as_tensor(images: list, resolution: int) -> torch.Tensor:
    x = torch.stack([torch.from_numpy(np.asarray(im).copy()) for im in images]).permute(0, 3, 1, 2)
    x = x.float() / 127.5 - 1
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=resolution, mode="area")
    return x
