"""Placed pairs: two-object scenes fit to be drawn with the objects' places exchanged, in one relation template.

The relation probe of ``unclip.eval.binding_probe`` and the placed-pairs training data (``--data
shapes:placed=1``, docs/clip.md "Relations") use the same scenes: two objects of different colours and different
shapes (so each phrase names one object), of equal size and clearly apart along x (so that after exchanging
places both frames are valid and "right of" is as clear as "left of" was). Such a scene is captioned
"a red circle to the left of a blue square", the left object first; the scene with the two places exchanged is the
same caption with "right". The counterfactual renderer (``unclip.data.shapes.counterfactual``) makes exactly that
edit from the "relation" hard negative, so a placed sample in training brings its pair with it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .scene import CLEAR_MARGIN, SceneGraph
from .splits import sample_rng

RELATION_TEMPLATE = "a {} {} to the {} of a {} {}"
PLACED_STREAM = 0x506C6364  # "Plcd": the part of a sample's random stream that picks its placed scene
MAX_DRAWS = 10_000  # about 1 train scene in 30 is fit; 10,000 misses in a row would mean a broken world


def exchangeable(scene: SceneGraph) -> bool:
    """Whether a two-object scene's objects can exchange places with "left of" true before and "right of" after:
    equal sizes keep both frames valid in each other's place, and the margin keeps the relation clear."""
    a, b = sorted(scene.objects, key=lambda o: o.x)
    return a.size == b.size and b.x - a.x >= CLEAR_MARGIN


def placed_caption(scene: SceneGraph, word: str = "left") -> str | None:
    """ "a {left object} to the {word} of a {right object}" for a scene fit for a placed pair, else None.

    ``word="left"`` is true of ``scene``; ``word="right"`` is true of :func:`exchanged` (scene)."""
    if len(scene.objects) != 2 or not exchangeable(scene):
        return None
    a, b = sorted(scene.objects, key=lambda o: o.x)
    if a.shape == b.shape or a.colour == b.colour:  # distinct shapes and colours keep the phrases unambiguous
        return None
    return RELATION_TEMPLATE.format(a.colour, a.shape, word, b.colour, b.shape)


def exchanged(scene: SceneGraph) -> SceneGraph:
    """A two-object scene with its objects' places exchanged (sizes are equal, so every frame stays valid); the
    left object is listed, and drawn, first."""
    a, b = sorted(scene.objects, key=lambda o: o.x)
    return dataclasses.replace(
        scene, objects=(dataclasses.replace(a, x=b.x, y=b.y), dataclasses.replace(b, x=a.x, y=a.y))
    )


def placed_sample(world, index: int) -> tuple[str, SceneGraph]:  # world: ShapesWorld
    """Placed sample ``index`` of ``world``'s split: the first fit scene among world indices drawn from a stream
    fixed by ``(world.seed, split, index)``, with its "left" caption. Deterministic, and any index is valid."""
    rng = np.random.default_rng([PLACED_STREAM, int(sample_rng(world.seed, world.split, index).integers(2**62))])
    for _ in range(MAX_DRAWS):
        scene = world.scene(int(rng.integers(2**40)))
        text = placed_caption(scene)
        if text is not None:
            return text, scene
    raise RuntimeError(f"no scene fit for a placed pair in {MAX_DRAWS} draws of {world.split!r}")
