import collections

import numpy as np
import pytest

from unclip.data.negatives import make_negative
from unclip.data.shapes import ShapesWorld, claims_hold, heldout_compositions, parse_caption
from unclip.data.shapes.counterfactual import counterfactual_scene
from unclip.data.shapes.placed import exchangeable, exchanged, placed_caption, placed_sample
from unclip.data.shapes.scene import CLEAR_MARGIN

WORDS = {"x": ("to the left of", "to the right of"), "y": ("above", "below")}


@pytest.mark.parametrize("axis", ["x", "y"])
def test_placed_samples_are_fit_true_deterministic_and_exchange_into_the_opposite_caption(axis):
    world = ShapesWorld("train", seed=7)
    samples = [placed_sample(world, i, axis) for i in range(40)]
    assert samples == [placed_sample(ShapesWorld("train", seed=7), i, axis) for i in range(40)]  # a pure function
    assert len({text for text, _ in samples}) > 30  # different indices, different scenes
    first_word, opposite_word = WORDS[axis]
    for text, scene in samples:
        a, b = sorted(scene.objects, key=lambda o: getattr(o, axis))  # a: the left (upper) one
        assert len(scene.objects) == 2 and a.size == b.size and getattr(b, axis) - getattr(a, axis) >= CLEAR_MARGIN
        assert a.shape != b.shape and a.colour != b.colour
        assert text == f"a {a.colour} {a.shape} {first_word} a {b.colour} {b.shape}"
        assert not heldout_compositions(scene)  # drawn from the train split's scenes
        moved, other = exchanged(scene), placed_caption(scene, "right" if axis == "x" else "below")
        assert other == f"a {a.colour} {a.shape} {opposite_word} a {b.colour} {b.shape}"
        assert claims_hold(parse_caption(text), scene) and not claims_hold(parse_caption(text), moved)
        assert claims_hold(parse_caption(other), moved) and not claims_hold(parse_caption(other), scene)
        # Each object takes the other's place; nothing else changes.
        key = lambda s: sorted((o.shape, o.colour, o.size, o.x, o.y) for o in s.objects)  # noqa: E731
        assert key(moved) == sorted([(a.shape, a.colour, a.size, b.x, b.y), (b.shape, b.colour, b.size, a.x, a.y)])
        assert moved.background == scene.background


def test_both_axes_draw_each_axis_about_half_the_time():
    world = ShapesWorld("train", seed=1)
    words = collections.Counter(parse_caption(placed_sample(world, i, "xy")[0]).relation for i in range(200))
    assert set(words) == {"left of", "above"} and 70 <= words["above"] <= 130
    with pytest.raises(ValueError, match="placed axes must be one of"):
        placed_sample(world, 0, "z")


@pytest.mark.parametrize("axis", ["x", "y"])
def test_the_relation_counterfactual_of_a_placed_sample_is_its_exchanged_scene(axis):
    """Training on placed samples with counterfactual_kinds=relation brings each one's placed pair: the
    counterfactual renderer makes the same edit from the "relation" hard negative."""
    world = ShapesWorld("train", seed=3)
    key = lambda s: sorted((o.shape, o.colour, o.size, o.x, o.y) for o in s.objects)  # noqa: E731
    for i in range(30):
        text, scene = placed_sample(world, i, axis)
        negative = make_negative(text, "relation", np.random.default_rng(i))
        assert negative == placed_caption(scene, "right" if axis == "x" else "below")
        assert key(counterfactual_scene(scene, text, negative)) == key(exchanged(scene))


def test_placed_caption_refuses_scenes_unfit_for_a_pair():
    world = ShapesWorld("train", seed=0)
    unfit = {"objects": 0, "size": 0, "names": 0}
    for i in range(3000):
        scene = world.scene(i)
        if placed_caption(scene) is not None:
            continue
        if len(scene.objects) != 2:
            unfit["objects"] += 1
        elif not exchangeable(scene):
            unfit["size"] += 1
        else:  # fit in place, but a shape or a colour is shared: a phrase would name both objects
            a, b = scene.objects
            assert a.shape == b.shape or a.colour == b.colour
            unfit["names"] += 1
    assert all(v > 0 for v in unfit.values())
    with pytest.raises(ValueError, match="unknown relation word"):
        placed_caption(world.scene(0), "near")


def test_placed_data_spec_gives_placed_samples_and_refuses_bad_options():
    from unclip.data.datasets import parse_data_spec

    world = ShapesWorld("train", seed=7, resolution=32)
    for option, axes in (("1", "x"), ("x", "x"), ("y", "y"), ("xy", "xy")):
        src = parse_data_spec(f"shapes:seed=7,placed={option}", resolution=32)
        for i in (0, 5, 10**9):  # any index
            record, (text, scene) = src.get(i), placed_sample(world, i, axes)
            assert record.caption == text and record.scene == scene.to_json() and record.image.shape == (32, 32, 3)
    assert parse_data_spec("shapes:placed=0").get(0).caption == ShapesWorld("train", 0).caption(0)
    with pytest.raises(ValueError, match="placed must be one of"):
        parse_data_spec("shapes:placed=yes")
    with pytest.raises(ValueError, match="drop relations="):
        parse_data_spec("shapes:placed=1,relations=0.5")
