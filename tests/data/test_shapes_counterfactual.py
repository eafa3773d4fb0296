import collections

import numpy as np
import pytest

from unclip.data.negatives import hard_negatives, make_negative
from unclip.data.shapes import SceneGraph, SceneObject, ShapesWorld, claims_hold, parse_caption
from unclip.data.shapes.counterfactual import counterfactual_scene
from unclip.data.shapes.scene import Background, frames_clear


def _scene(*objects: tuple) -> SceneGraph:
    return SceneGraph(tuple(SceneObject(*o) for o in objects), Background("plain", "grey"))


def test_a_colour_swap_recolours_only_the_two_named_objects():
    scene = _scene(("circle", "red", "small", 0.2, 0.2), ("square", "blue", "small", 0.8, 0.8),
                   ("star", "green", "small", 0.2, 0.8))  # fmt: skip
    cf = counterfactual_scene(scene, "a red circle, a blue square and a green star",
                              "a blue circle, a red square and a green star")  # fmt: skip
    assert [(o.shape, o.colour, o.x, o.y) for o in cf.objects] == [
        ("circle", "blue", 0.2, 0.2), ("square", "red", 0.8, 0.8), ("star", "green", 0.2, 0.8)]  # fmt: skip
    assert cf.background == scene.background


def test_a_relation_flip_exchanges_the_two_places_when_they_fit():
    scene = _scene(("heart", "pink", "small", 0.2, 0.5), ("cross", "cyan", "small", 0.8, 0.5),
                   ("circle", "red", "small", 0.5, 0.15))  # fmt: skip
    cf = counterfactual_scene(scene, "a pink heart left of a cyan cross", "a pink heart right of a cyan cross")
    heart, cross, circle = cf.objects
    assert (heart.x, cross.x) == (0.8, 0.2) and circle == scene.objects[2]


def test_a_relation_flip_mirrors_the_scene_when_the_frames_do_not_fit_each_others_place():
    # The large square cannot sit at the small heart's place near the edge, so the scene is mirrored in x.
    scene = _scene(("heart", "pink", "small", 0.15, 0.5), ("square", "blue", "large", 0.7, 0.5))
    cf = counterfactual_scene(scene, "a heart to the left of a square", "a heart to the right of a square")
    assert [round(o.x, 6) for o in cf.objects] == [0.85, 0.3] and [o.y for o in cf.objects] == [0.5, 0.5]


def test_count_edits_and_unparsable_captions_give_none():
    scene = _scene(("star", "red", "small", 0.2, 0.2), ("star", "red", "small", 0.8, 0.8))
    assert counterfactual_scene(scene, "two red stars", "three red stars") is None
    assert counterfactual_scene(scene, "two red stars", "a dog") is None
    # A negative that is true of the scene already has no counterfactual to draw.
    assert counterfactual_scene(scene, "two red stars", "two red stars") is None


def test_every_drawn_counterfactual_makes_the_negative_true_and_the_caption_false():
    world = ShapesWorld(split="train", seed=3, resolution=32)
    made, tried = collections.Counter(), collections.Counter()
    for i in range(300):
        s = world[i]
        for kind, neg in hard_negatives(s.caption, np.random.default_rng(i)).items():
            tried[kind] += 1
            cf = counterfactual_scene(s.scene, s.caption, neg)
            if cf is None:
                continue
            made[kind] += 1
            assert claims_hold(parse_caption(neg), cf) and not claims_hold(parse_caption(s.caption), cf)
            assert frames_clear(cf.objects) and len(cf.objects) == len(s.scene.objects)
            assert cf.background == s.scene.background
            both = list(zip(s.scene.objects, cf.objects, strict=True))
            if kind == "swap":  # the objects of two phrases change, and only in colour
                assert sum(a != b for a, b in both) >= 2
                assert all((a.shape, a.x, a.y) == (b.shape, b.x, b.y) for a, b in both)
            if kind in ("colour", "shape"):
                assert all((a.x, a.y, a.size) == (b.x, b.y, b.size) for a, b in both)
    assert made["count"] == 0
    # Most edits of the drawable kinds can be drawn (the rest: the caption's words do not pin the objects).
    for kind in ("swap", "colour", "shape", "relation"):
        assert made[kind] >= 0.6 * tried[kind] > 10, (kind, made[kind], tried[kind])


def test_make_negative_and_counterfactual_agree_on_the_swap_example():
    scene = _scene(("circle", "red", "small", 0.2, 0.2), ("square", "blue", "small", 0.8, 0.8))
    caption = "a red circle and a blue square"
    neg = make_negative(caption, "swap", np.random.default_rng(0))
    assert neg == "a blue circle and a red square"
    cf = counterfactual_scene(scene, caption, neg)
    assert [o.colour for o in cf.objects] == ["blue", "red"]
    with pytest.raises(ValueError):  # the edited scene is a real scene graph: it round-trips strictly
        SceneGraph.from_json({**cf.to_json(), "format": "nope"})
    assert SceneGraph.from_json(cf.to_json()) == cf
