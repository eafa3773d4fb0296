"""Captions are true of their scenes: written, parsed back, and checked against the scene graph."""

import numpy as np
import pytest

from unclip.data.shapes import ShapesWorld, claims_hold, parse_caption, sample_scene
from unclip.data.shapes.captions import CaptionClaims, Phrase, caption_text, describe
from unclip.data.shapes.scene import Background, SceneGraph, SceneObject


def test_ten_thousand_captions_parse_back_to_their_claims_and_hold():
    rng = np.random.default_rng(0)
    texts = set()
    for _ in range(10_000):
        scene = sample_scene(rng)
        claims = describe(scene, rng)
        text = caption_text(claims, rng)
        parsed = parse_caption(text)
        assert parsed == claims, text
        assert claims_hold(parsed, scene), text
        texts.add(text.lower().rstrip("."))
    assert len(texts) > 8000  # varied wording, not a handful of templates


def test_world_captions_hold():
    w = ShapesWorld("train", seed=4)
    for i in range(300):
        s = w[i] if i < 20 else None
        scene = w.scene(i)
        text = s.caption if s else w.caption(i)
        assert claims_hold(parse_caption(text), scene), text


def test_claims_usually_fail_on_other_scenes():
    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng) for _ in range(400)]
    claims = [describe(s, rng) for s in scenes]
    false = sum(not claims_hold(c, scenes[(i + 1) % 400]) for i, c in enumerate(claims))
    assert false > 0.85 * 400


def test_exhaustive_list_semantics():
    scene = SceneGraph(
        (SceneObject("square", "yellow", "small", 0.2, 0.2), SceneObject("square", "yellow", "large", 0.7, 0.7)),
        Background("plain", "grey"),
    )
    assert claims_hold(parse_caption("two yellow squares on a grey background"), scene)
    assert not claims_hold(parse_caption("a yellow square"), scene)  # exhaustive: there are two
    assert not claims_hold(parse_caption("three yellow squares"), scene)
    assert not claims_hold(parse_caption("two yellow squares on a white background"), scene)
    assert not claims_hold(parse_caption("two red squares"), scene)
    assert claims_hold(parse_caption("A small yellow square and a big square in yellow."), scene)
    assert claims_hold(parse_caption("a small square to the left of a big square"), scene)
    assert claims_hold(parse_caption("a tiny square above a large yellow square"), scene)
    assert not claims_hold(parse_caption("a small square to the right of a big square"), scene)


def test_parser_reads_synonyms_and_counts():
    c = parse_caption("There are a pair of violet rhombuses and 3 turquoise plus signs against a black backdrop.")
    assert c == CaptionClaims((Phrase(2, "diamond", "purple"), Phrase(3, "cross", "cyan")), None, ("plain", "black"))
    g = parse_caption("a white and slate gradient background with an orange disc")
    assert g == CaptionClaims((Phrase(1, "circle", "orange"),), None, ("gradient", "slate", "white"))


@pytest.mark.parametrize(
    "text",
    ["a purple blob", "two red circle", "a red circles", "a red blue square", "", "an orange star on a red background"],
)
def test_parser_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError):
        parse_caption(text)


def test_converse_caption_says_the_same_relation_from_the_other_object():
    from unclip.data.shapes import converse_caption
    from unclip.data.shapes.captions import CONVERSE

    world = ShapesWorld(split="train", seed=0)
    scenes = [world.scene(i) for i in range(600)]
    rng = np.random.default_rng(0)
    checked = 0
    for i, scene in enumerate(scenes):
        text = world.caption(i)
        claims = parse_caption(text)
        converse = converse_caption(text, rng)
        if claims.relation is None:
            assert converse is None
            continue
        turned = parse_caption(converse)
        assert turned.phrases == claims.phrases[::-1] and turned.relation == CONVERSE[claims.relation]
        assert turned.background == claims.background
        # True of exactly the scenes the caption is true of: its own, and the same ones among 60 others.
        for other in [scene, *scenes[i + 1 : i + 61]]:
            assert claims_hold(turned, other) == claims_hold(claims, other)
        checked += 1
    assert checked >= 100
    assert converse_caption("not a caption at all", rng) is None


def test_world_relation_rate_is_validated_and_kept():
    assert ShapesWorld("train", seed=1, relation_rate=1.0).relation_rate == 1.0
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match="relation_rate must lie in"):
            ShapesWorld("train", seed=1, relation_rate=bad)
