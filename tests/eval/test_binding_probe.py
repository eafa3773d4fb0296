"""The swap probe: scene pairs that differ only in which object has which colour, and Winoground's scores."""

import pytest
import torch

from unclip.data.shapes import claims_hold, parse_caption
from unclip.eval.binding_probe import binding_probe, placed_pairs, probe_scores, swapped_pairs


def test_pairs_differ_only_in_the_binding():
    for a, b, cap_a, cap_b in swapped_pairs(20, "test", seed=0):
        assert [(o.shape, o.size, o.x, o.y) for o in a.objects] == [(o.shape, o.size, o.x, o.y) for o in b.objects]
        assert [o.colour for o in a.objects] == [o.colour for o in reversed(b.objects)]
        assert sorted(cap_a.split()) == sorted(cap_b.split())  # the same words: only a bag of words can't tell
        assert claims_hold(parse_caption(cap_a), a) and not claims_hold(parse_caption(cap_a), b)
        assert claims_hold(parse_caption(cap_b), b) and not claims_hold(parse_caption(cap_b), a)


def test_relation_pairs_differ_only_in_the_places_and_one_word():
    for a, b, cap_a, cap_b in placed_pairs(20, "test", seed=0):
        (l, r), (l2, r2) = a.objects if a.objects[0].x < a.objects[1].x else a.objects[::-1], b.objects
        assert (l2.shape, l2.colour, l2.x, l2.y) == (l.shape, l.colour, r.x, r.y)
        assert (r2.shape, r2.colour, r2.x, r2.y) == (r.shape, r.colour, l.x, l.y) and l.size == r.size
        assert cap_a.replace(" left ", " right ") == cap_b and " left " in cap_a
        assert claims_hold(parse_caption(cap_a), a) and not claims_hold(parse_caption(cap_a), b)
        assert claims_hold(parse_caption(cap_b), b) and not claims_hold(parse_caption(cap_b), a)


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def test_scores_of_a_bag_of_words_text_tower():
    torch.manual_seed(0)
    z_a, z_b, t = _unit(50, 16), _unit(50, 16), _unit(50, 16)
    out = probe_scores(z_a, z_b, t, t.clone())  # both captions embed identically
    assert out["text_cosine"] == pytest.approx(1.0)
    assert out["text_score"] == 0.0 and out["group_score"] == 0.0  # a tie is a failure
    assert out["alignment"] == 0.0  # no text difference, no direction


def test_scores_of_towers_that_agree_and_that_do_not():
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(50, 16, 3, dtype=torch.float64))  # per row: 3 orthonormal directions
    u, d, e = q[..., 0], 0.3 * q[..., 1], 0.3 * q[..., 2]
    agree = probe_scores(u + d, u - d, u + d, u - d)
    assert agree["text_score"] == agree["image_score"] == agree["group_score"] == 1.0
    assert agree["alignment"] == pytest.approx(1.0)
    # Both towers see the swap, along orthogonal directions: alignment 0 (the scores are ties, left to rounding).
    apart = probe_scores(u + d, u - d, u + e, u - e)
    assert apart["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert apart["image_cosine"] == pytest.approx(apart["text_cosine"]) and apart["text_cosine"] < 0.9


@pytest.fixture(scope="module")
def tiny_clip_model():
    from unclip.clip import CLIP, PRESETS, make_tokenizer

    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    return CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).eval()


def test_probe_runs_on_a_clip_and_reports_chance(tiny_clip_model):
    out = binding_probe(tiny_clip_model, n=12, batch_size=5, layouts=16)  # batches that do not divide n
    assert out["n"] == 12 and out["chance"]["group_score"] == pytest.approx(1 / 6)
    assert out["image_decodability_detail"]["n_train"] == 10 and 0 <= out["image_decodability"] <= 1
    assert out["chance"]["image_decodability"] == 0.5 and len(out["image_decodability_detail"]["per_combo"]) == 6
    assert -1.0 <= out["alignment"] <= 1.0 and 0.0 <= out["group_score"] <= min(out["text_score"], out["image_score"])
    rel = out["relation"]
    assert rel["template"] == "a {} {} to the {} of a {} {}" and rel["text_cosine"] < 1.0
    assert 0.0 <= rel["group_score"] <= min(rel["text_score"], rel["image_score"])
    assert rel["image_decodability_detail"]["n_train"] == 10 and 0 <= rel["image_decodability"] <= 1
    with pytest.raises(ValueError, match="n must be"):
        binding_probe(tiny_clip_model, n=0)


def _detections(images: torch.Tensor, bound: bool) -> torch.Tensor:
    """Stand-in image towers from the judge's detections: counts of (shape, colour) pairs (bound) or of shapes and
    colours separately (a bag of words, blind to which colour is on which shape)."""
    from unclip.data.shapes import detect
    from unclip.data.shapes.scene import COLOURS, SHAPES
    from unclip.eval.generation import to_uint8

    rows = []
    for image in to_uint8(images):
        found = detect(image)
        if bound:
            rows.append([sum(d.shape == s and d.colour == c for d in found) for s in SHAPES for c in COLOURS])
        else:
            rows.append([sum(d.shape == s for d in found) for s in SHAPES] + [sum(d.colour == c for d in found)
                                                                             for c in COLOURS])  # fmt: skip
    return torch.tensor(rows, dtype=torch.float32)


def test_image_decodability_tells_a_binding_tower_from_a_bag_of_words():
    from unclip.eval.binding_probe import PROBE_COMBOS, bound_and_swapped, image_decodability, two_object_layouts

    layouts = two_object_layouts(3)
    bound, swapped = bound_and_swapped(layouts, PROBE_COMBOS[0])  # red circle + blue square
    for a, b, scene in zip(bound, swapped, layouts, strict=True):
        assert [(o.shape, o.colour) for o in a.objects] == [("circle", "red"), ("square", "blue")]
        assert [(o.shape, o.colour) for o in b.objects] == [("circle", "blue"), ("square", "red")]
        assert [(o.x, o.y, o.size) for o in a.objects] == [(o.x, o.y, o.size) for o in scene.objects]
        assert a.background == b.background == scene.background

    args = dict(resolution=64, n=30, n_train=20, combos=PROBE_COMBOS[:2], batch_size=16)
    binding = image_decodability(lambda x: _detections(x, bound=True), **args)
    blind = image_decodability(lambda x: _detections(x, bound=False), **args)
    assert binding["accuracy"] >= 0.95 and set(binding["per_combo"]) == {"red circle + blue square",
                                                                          "green star + purple heart"}  # fmt: skip
    assert blind["accuracy"] == 0.5  # identical features: one class predicted for all


def _placements(images: torch.Tensor, placed: bool) -> torch.Tensor:
    """Stand-in image towers: per (shape, colour), its x position in the canvas (placed), or 1 if present (blind)."""
    from unclip.data.shapes import detect
    from unclip.data.shapes.scene import COLOURS, SHAPES
    from unclip.eval.generation import to_uint8

    rows = []
    for image in to_uint8(images):
        where = {(d.shape, d.colour): d.x if placed else 1.0 for d in detect(image)}
        rows.append([where.get((s, c), 0.0) for s in SHAPES for c in COLOURS])
    return torch.tensor(rows, dtype=torch.float32)


def test_placement_decodability_tells_a_tower_that_sees_places_from_one_that_does_not():
    from unclip.eval.binding_probe import (
        PROBE_COMBOS,
        exchangeable,
        image_decodability,
        left_and_right,
        two_object_layouts,
    )

    layouts = two_object_layouts(3, fit=exchangeable)
    left, right = left_and_right(layouts, PROBE_COMBOS[0])  # red circle left of blue square, and then right of it
    for a, b, scene in zip(left, right, layouts, strict=True):
        sa = {(o.shape, o.colour): o.x for o in a.objects}
        sb = {(o.shape, o.colour): o.x for o in b.objects}
        assert sa[("circle", "red")] < sa[("square", "blue")] and sb[("circle", "red")] > sb[("square", "blue")]
        # the same two places, sizes and background: only which object stands where differs
        assert sorted((o.x, o.y, o.size) for o in a.objects) == sorted((o.x, o.y, o.size) for o in scene.objects)
        assert sorted((o.x, o.y, o.size) for o in b.objects) == sorted((o.x, o.y, o.size) for o in scene.objects)
        assert a.background == b.background == scene.background

    args = dict(resolution=64, n=30, n_train=20, combos=PROBE_COMBOS[:2], batch_size=16, edit="placement")
    assert image_decodability(lambda x: _placements(x, placed=True), **args)["accuracy"] >= 0.95
    assert image_decodability(lambda x: _placements(x, placed=False), **args)["accuracy"] == 0.5
    with pytest.raises(ValueError, match="edit must be one of"):
        image_decodability(lambda x: x, **{**args, "edit": "count"})


def test_linear_probe_accuracy_on_separable_and_identical_gaussians():
    from unclip.eval.binding_probe import linear_probe_accuracy

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g)
    shift = torch.zeros(10)
    shift[3] = 4.0
    assert linear_probe_accuracy(x[:100] + shift, x[100:], n_train=60) >= 0.97
    assert 0.3 < linear_probe_accuracy(x[:100], x[100:], n_train=60) < 0.7  # the same distribution: chance
    with pytest.raises(ValueError, match="n_train"):
        linear_probe_accuracy(x[:10], x[10:20], n_train=10)


class _WordTower:
    """A stand-in text tower for "a C S to the W of a C S" captions: ``bound`` embeds which object is on the left
    (the relation bound to its objects); otherwise the bag of words plus the relation word, blind to whom it binds."""

    def __init__(self, bound: bool) -> None:
        self.bound = bound
        self.vocab: dict[str, torch.Tensor] = {}

    def _vec(self, word: str) -> torch.Tensor:
        if word not in self.vocab:
            self.vocab[word] = torch.randn(16, generator=torch.Generator().manual_seed(len(self.vocab)))
        return self.vocab[word]

    def encode_text(self, captions):
        import re
        from types import SimpleNamespace

        rows = []
        for text in captions:
            c1, s1, word, c2, s2 = re.match(r"a (\S+) (\S+) to the (left|right) of a (\S+) (\S+)", text).groups()
            first, second = self._vec(c1) + self._vec(s1), self._vec(c2) + self._vec(s2)
            if self.bound:  # "X left of Y" and "Y right of X" both put X on the left
                rows.append(first - second if word == "left" else second - first)
            else:
                rows.append(first + second + (self._vec("left") if word == "left" else self._vec("right")))
        return SimpleNamespace(embedding=torch.stack(rows))


def test_converse_score_tells_a_relation_bound_to_its_objects_from_a_relation_word():
    from unclip.eval.binding_probe import converse_scores, placed_pairs

    pairs = placed_pairs(20)
    bound, words = converse_scores(_WordTower(bound=True), pairs, 7), converse_scores(_WordTower(bound=False), pairs)
    assert bound["converse_score"] == 1.0 and bound["converse_cosine"] == pytest.approx(1.0)
    assert (
        words["converse_score"] == 0.0
    )  # "Y left of X" has the same words and the same relation word as "X left of Y"
