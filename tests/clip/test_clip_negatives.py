import numpy as np
import pytest

from unclip.data.negatives import KINDS, hard_negatives, make_negative
from unclip.data.shapes import ShapesWorld, claims_hold, parse_caption
from unclip.train.clip_batch import batch_negatives


def test_swap_exchanges_the_colours_of_two_objects():
    rng = np.random.default_rng(0)
    assert make_negative("A red circle left of a blue square", "swap", rng) == "A blue circle left of a red square"


def test_each_kind_changes_exactly_its_slot():
    rng = np.random.default_rng(0)
    text = "two yellow circles and a green star"
    a = parse_caption(text)
    for kind in ("colour", "shape", "count"):
        neg = make_negative(text, kind, rng)
        b = parse_caption(neg)  # still a well-formed caption of the world
        diffs = [(p, q) for p, q in zip(a.phrases, b.phrases, strict=True) if p != q]
        assert len(diffs) == 1, (kind, neg)
        p, q = diffs[0]
        field = {"colour": "colour", "shape": "shape", "count": "count"}[kind]
        assert getattr(p, field) != getattr(q, field)
        assert {f for f in ("count", "shape", "colour", "size") if getattr(p, f) != getattr(q, f)} == {field}


def test_relation_is_replaced_by_its_opposite():
    rng = np.random.default_rng(0)
    neg = make_negative("a star to the left of a heart", "relation", rng)
    assert neg == "a star to the right of a heart"
    assert parse_caption(neg).relation == "right of"
    assert make_negative("An orange circle above a red star", "relation", rng) == "An orange circle below a red star"


def test_articles_follow_the_new_word():
    rng = np.random.default_rng(3)
    for _ in range(20):
        neg = make_negative("An orange circle", "colour", rng)
        assert neg.startswith("An orange") is False and neg.split()[0] == "A", neg


def test_captions_without_a_slot_get_none():
    rng = np.random.default_rng(0)
    assert make_negative("a photo of a cat", "colour", rng) is None
    assert make_negative("a red circle", "swap", rng) is None
    assert hard_negatives("a photo of a cat", rng) == {}
    with pytest.raises(ValueError, match="unknown hard-negative kind 'size'"):
        make_negative("a red circle", "size", rng)


def test_swap_skips_objects_of_the_same_shape():
    assert make_negative("a blue star and a yellow star", "swap", np.random.default_rng(0)) is None


def test_shapes_negatives_are_false_of_their_scene():
    world = ShapesWorld(split="train", seed=0, resolution=32)
    samples = [world[i] for i in range(60)]
    checked = 0
    for s in samples:
        is_list = parse_caption(s.caption).relation is None
        for kind, neg in hard_negatives(s.caption, np.random.default_rng(0)).items():
            assert neg.lower() != s.caption.lower()
            if kind in ("swap", "count", "shape") and is_list:
                # Exhaustive list captions: every such edit is false without looking at the scene.
                assert not claims_hold(parse_caption(neg), s.scene), (s.caption, neg)
            checked += 1
    assert checked > 100
    # With scene graphs, the stage keeps only negatives that the scene proves false, whatever their kind.
    kept = 0
    for i, s in enumerate(samples):
        for neg in batch_negatives([s.caption], [s.scene.to_json()], [i], KINDS, per_caption=5):
            assert not claims_hold(parse_caption(neg), s.scene), (s.caption, neg)
            kept += 1
    assert kept > 100


def test_batch_negatives_depend_only_on_each_sample_seed():
    world = ShapesWorld(split="train", seed=0, resolution=32)
    samples = [world[i] for i in range(6)]
    caps, scenes = [s.caption for s in samples], [s.scene.to_json() for s in samples]
    whole = batch_negatives(caps, scenes, list(range(6)), KINDS, 1)
    halves = batch_negatives(caps[:3], scenes[:3], [0, 1, 2], KINDS, 1) + batch_negatives(
        caps[3:], scenes[3:], [3, 4, 5], KINDS, 1
    )
    assert whole == halves and len(whole) >= 5
