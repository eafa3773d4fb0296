"""``ShapesWorld``: an indexable, unlimited, deterministic dataset of captioned renders with scene graphs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .captions import RELATION_RATE, caption
from .render import check_resolution, render
from .scene import SceneGraph
from .splits import SPLITS, heldout_compositions, sample_rng, sample_split_scene


@dataclass(frozen=True)
class Sample:
    key: str
    image: np.ndarray  # uint8 (H, W, 3)
    caption: str
    scene: SceneGraph

    @property
    def heldout(self) -> list[tuple[str, ...]]:
        """Held-out compositions this scene contains (always empty in ``train``)."""
        return heldout_compositions(self.scene)


class ShapesWorld:
    """``world[i]`` is sample ``i`` of ``split``: the same for a given ``(seed, split, i)`` on every machine.

    ``length`` only bounds iteration and ``len()``; any non-negative index is valid. ``relation_rate`` is how often
    a caption states a relation where its scene has a clear one (0.35 by default). Raising it turns some captions
    that state none into ones that do; every other caption, and every scene, stays as it was.
    """

    def __init__(
        self, split: str = "train", seed: int = 0, resolution: int = 64, length: int = 1_000_000,
        relation_rate: float = RELATION_RATE,
    ) -> None:  # fmt: skip
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.split, self.seed = split, int(seed)
        self.resolution = check_resolution(resolution)
        self.length = int(length)
        if not 0 <= relation_rate <= 1:
            raise ValueError(f"relation_rate must lie in [0, 1], got {relation_rate!r}")
        self.relation_rate = float(relation_rate)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> SceneGraph:
        """The scene graph of sample ``index`` without rendering it."""
        return sample_split_scene(sample_rng(self.seed, self.split, index, 0), self.split)

    def caption(self, index: int) -> str:
        return self.captioned(index)[0]

    def captioned(self, index: int) -> tuple[str, SceneGraph]:
        """The caption and scene graph of sample ``index`` without rendering it (the scene sampled once)."""
        scene = self.scene(index)
        return caption(scene, sample_rng(self.seed, self.split, index, 1), self.relation_rate), scene

    def key(self, index: int) -> str:
        return f"{self.split}-{self.seed}-{index:08d}"

    def __getitem__(self, index: int) -> Sample:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"ShapesWorld indices are integers, got {type(index).__name__}")
        if index < 0:
            index += self.length
        if index < 0:
            raise IndexError(f"sample index {index} is negative")
        text, scene = self.captioned(index)
        return Sample(self.key(index), render(scene, self.resolution), text, scene)

    def __iter__(self):
        return (self[i] for i in range(self.length))
