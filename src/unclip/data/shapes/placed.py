"""Placed pairs: two-object scenes fit to be drawn with the objects' places exchanged, in one relation template.

The relation probe of ``unclip.eval.binding_probe`` and the placed-pairs training data (``--data
shapes:placed=x``, docs/clip.md "Relations") use the same scenes: two objects of different colours and different
shapes (so each phrase names one object), of equal size and clearly apart along an axis (so that after exchanging
places both frames are valid and the opposite relation is as clear as the first). Along x such a scene is captioned
"a red circle to the left of a blue square", the left object first; along y "a red circle above a blue square",
the upper object first. The scene with the two places exchanged takes the same caption with "right" (or "below").
The counterfactual renderer (``unclip.data.shapes.counterfactual``) makes exactly that edit from the "relation"
hard negative, so a placed sample in training brings its pair with it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .scene import CLEAR_MARGIN, SceneGraph
from .splits import sample_rng

RELATION_TEMPLATE = "a {} {} to the {} of a {} {}"  # the probe's (x): "left" / "right"
VERTICAL_TEMPLATE = "a {} {} {} a {} {}"  # y: "above" / "below"
# Per axis: the word true of the scene (the first-named object has the smaller coordinate), then its opposite.
AXIS_WORDS = {"x": ("left", "right"), "y": ("above", "below")}
AXES = ("x", "y", "xy")  # the values of the data option: one axis, or both (each sample draws one)
PLACED_STREAM = 0x506C6364  # "Plcd": the part of a sample's random stream that picks its placed scene
MAX_DRAWS = 10_000  # about 1 train scene in 30 is fit; 10,000 misses in a row would mean a broken world


def _axis(word: str) -> str:
    for axis, words in AXIS_WORDS.items():
        if word in words:
            return axis
    raise ValueError(f"unknown relation word {word!r}; expected one of left, right, above, below")


def exchangeable(scene: SceneGraph, axis: str = "x") -> bool:
    """Whether a two-object scene's objects can exchange places with the relation along ``axis`` clear before and
    its opposite clear after: equal sizes keep both frames valid in each other's place, and the margin keeps the
    relation clear."""
    a, b = sorted(scene.objects, key=lambda o: getattr(o, axis))
    return a.size == b.size and getattr(b, axis) - getattr(a, axis) >= CLEAR_MARGIN


def placed_caption(scene: SceneGraph, word: str = "left") -> str | None:
    """ "a {first} to the {word} of a {second}" ("a {first} {word} a {second}" along y) for a scene fit for a placed
    pair along ``word``'s axis, else None. The first-named object is the left one (x) or the upper one (y), so
    "left" and "above" are true of ``scene`` and "right" and "below" of :func:`exchanged` (scene)."""
    axis = _axis(word)
    if len(scene.objects) != 2 or not exchangeable(scene, axis):
        return None
    a, b = sorted(scene.objects, key=lambda o: getattr(o, axis))
    if a.shape == b.shape or a.colour == b.colour:  # distinct shapes and colours keep the phrases unambiguous
        return None
    template = RELATION_TEMPLATE if axis == "x" else VERTICAL_TEMPLATE
    return template.format(a.colour, a.shape, word, b.colour, b.shape)


def exchanged(scene: SceneGraph) -> SceneGraph:
    """A two-object scene with its objects' places exchanged (sizes are equal, so every frame stays valid); the
    left object is listed, and drawn, first."""
    a, b = sorted(scene.objects, key=lambda o: o.x)
    return dataclasses.replace(
        scene, objects=(dataclasses.replace(a, x=b.x, y=b.y), dataclasses.replace(b, x=a.x, y=a.y))
    )


def placed_sample(world, index: int, axes: str = "x") -> tuple[str, SceneGraph]:  # world: ShapesWorld
    """Placed sample ``index`` of ``world``'s split: an axis drawn from ``axes``, then the first scene fit along it
    among world indices drawn from a stream fixed by ``(world.seed, split, index)``, with its "left" or "above"
    caption. Deterministic, and any index is valid."""
    if axes not in AXES:
        raise ValueError(f"placed axes must be one of {', '.join(AXES)}, got {axes!r}")
    rng = np.random.default_rng([PLACED_STREAM, int(sample_rng(world.seed, world.split, index).integers(2**62))])
    word = AXIS_WORDS[axes if axes != "xy" else ("x", "y")[int(rng.integers(2))]][0]
    for _ in range(MAX_DRAWS):
        scene = world.scene(int(rng.integers(2**40)))
        text = placed_caption(scene, word)
        if text is not None:
            return text, scene
    raise RuntimeError(f"no scene fit for a placed pair in {MAX_DRAWS} draws of {world.split!r}")
