"""Splits of the Shapes world and the compositions held out of training.

Every sample is drawn from its own random stream, ``SeedSequence(seed, spawn_key=(split, index, part))``: the
streams of different splits never coincide, whatever the seed and index, and sample *i* does not depend on any
other sample. ``part`` separates the scene's stream from the caption's, so rewording captions never moves a scene.

Held out of ``train`` (never present in a train image, whether or not its caption mentions it):

* colour–shape pairs in ``HELDOUT_PAIRS`` (one per colour and one per shape);
* relation triples in ``HELDOUT_TRIPLES``: ``(shape_a, relation, shape_b)`` holding by ``CLEAR_MARGIN`` or more,
  together with their converse (``square right of circle`` is the same fact as ``circle left of square``).

``val`` and ``test`` follow the unconstrained distribution; the ``heldout`` split only has scenes that contain
at least one held-out composition, to measure zero-shot compositional generalization.
"""

from __future__ import annotations

import numpy as np

from .scene import CLEAR_MARGIN, INVERSE, SceneGraph, relation_holds, sample_scene

SPLITS = ("train", "val", "test", "heldout")
_SPLIT_CODE = {name: k for k, name in enumerate(SPLITS)}

HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("orange", "hexagon"),
        ("yellow", "cross"),
        ("green", "heart"),
        ("cyan", "square"),
        ("blue", "triangle"),
        ("purple", "circle"),
        ("pink", "diamond"),
    }
)

HELDOUT_TRIPLES: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("circle", "left of", "square"),
        ("star", "above", "heart"),
        ("triangle", "right of", "hexagon"),
        ("cross", "below", "diamond"),
        ("heart", "left of", "triangle"),
        ("square", "above", "star"),
    }
)
# The converse of each triple is the same fact, so it is held out too.
_HELDOUT_ALL = HELDOUT_TRIPLES | {(b, INVERSE[r], a) for a, r, b in HELDOUT_TRIPLES}


def split_code(split: str) -> int:
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return _SPLIT_CODE[split]


def sample_rng(seed: int, split: str, index: int, part: int = 0) -> np.random.Generator:
    """The random stream of one part (0: scene, 1: caption) of sample ``index`` of ``split``."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_code(split), index, part)))


def heldout_compositions(scene: SceneGraph) -> list[tuple[str, ...]]:
    """The held-out pairs ``(colour, shape)`` and triples ``(shape, relation, shape)`` present in ``scene``."""
    found: list[tuple[str, ...]] = [(o.colour, o.shape) for o in scene.objects if (o.colour, o.shape) in HELDOUT_PAIRS]
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i == j:
                continue
            for a_shape, rel, b_shape in _HELDOUT_ALL:
                if a.shape == a_shape and b.shape == b_shape and relation_holds(a, b, rel, CLEAR_MARGIN):
                    found.append((a_shape, rel, b_shape))
    return found


def sample_split_scene(rng: np.random.Generator, split: str, max_tries: int = 1000) -> SceneGraph:
    """A scene from ``split``'s distribution: train rejects held-out compositions, heldout requires one."""
    split_code(split)
    for _ in range(max_tries):
        scene = sample_scene(rng)
        if split == "train" and heldout_compositions(scene):
            continue
        if split == "heldout" and not heldout_compositions(scene):
            continue
        return scene
    raise RuntimeError(f"no {split} scene found in {max_tries} tries")
