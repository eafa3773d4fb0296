"""``unclip eval clip``: retrieval and binding maths on hand-made encoders, and the command on a tiny random CLIP."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unclip.cli.main import main
from unclip.clip import TextEncoding
from unclip.data.negatives import KINDS
from unclip.data.shapes import claims_hold, parse_caption
from unclip.data.shapes.batch import render_batch
from unclip.data.shapes.world import ShapesWorld
from unclip.eval.clip_eval import (
    binding_scores,
    chance_recall,
    distractors,
    evaluate_clip,
    recall_at_k,
    relevance,
    retrieval_scores,
)

# ---------------------------------------------------------------- retrieval maths


def test_recall_by_hand():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    relevant = torch.eye(3, dtype=torch.bool)
    # ranks of the paired candidate: row 0 first, row 1 second, row 2 third
    assert recall_at_k(sim, relevant, ks=(1, 2, 3)) == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@3": 1.0})
    relevant[2, 0] = True  # another true caption for query 2, ranked first
    assert recall_at_k(sim, relevant, ks=(1,))["R@1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one relevant"):
        recall_at_k(sim, torch.zeros(3, 3, dtype=torch.bool))


def test_chance_recall_is_the_hypergeometric_miss_probability():
    relevant = torch.tensor([[True, True, False, False], [True, False, False, False]])
    # query 0: 1 - C(2,k)/C(4,k); query 1: k/4
    assert chance_recall(relevant, ks=(1, 2, 5)) == pytest.approx(
        {"R@1": (0.5 + 0.25) / 2, "R@2": ((1 - 1 / 6) + 0.5) / 2, "R@5": 1.0}  # k beyond the candidates: sure hit
    )


def test_oracle_is_perfect_and_shuffled_is_chance():
    n = 400
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(n, 64, generator=g), dim=1)
    eye = torch.eye(n, dtype=torch.bool)
    perfect = retrieval_scores(z, z, eye)
    for direction in ("image_to_text", "text_to_image"):
        assert perfect[direction]["R@1"] == perfect[direction]["R@5"] == 1.0
        assert perfect[direction]["chance"] == pytest.approx({"R@1": 1 / n, "R@5": 5 / n})
    shuffled = retrieval_scores(z, z[torch.randperm(n, generator=g)], eye)
    for direction in ("image_to_text", "text_to_image"):
        # chance is 0.0025 / 0.0125; binomial sd at n=400 is 0.0025 / 0.0055
        assert shuffled[direction]["R@1"] <= 0.015 and shuffled[direction]["R@5"] <= 0.04


def test_duplicates_with_matching_scene_graphs_count_as_correct():
    samples = [ShapesWorld("test", seed=0)[i] for i in range(6)]
    samples.insert(1, samples[0])  # pair 1 is a second copy of pair 0: same scene, same caption
    captions, scenes = [s.caption for s in samples], [s.scene for s in samples]
    rel = relevance(captions, scenes)
    for i, j in [(0, 1), (1, 0), (0, 0), (3, 3)]:
        assert rel[i, j]
    for i in range(len(samples)):
        for j in range(len(samples)):
            assert bool(rel[i, j]) == (i == j or claims_hold(parse_caption(captions[j]), scenes[i]))
    z = torch.eye(len(samples))
    swapped = z[[1, 0, *range(2, len(samples))]]  # images 0 and 1 retrieve each other's (identical) caption
    out = retrieval_scores(z, swapped, rel)
    assert out["image_to_text"]["R@1"] == out["text_to_image"]["R@1"] == 1.0
    strict = retrieval_scores(z, swapped, torch.eye(len(samples), dtype=torch.bool))  # pair-only relevance
    assert strict["image_to_text"]["R@1"] == pytest.approx(5 / 7)


# ---------------------------------------------------------------- binding


def test_binding_scores_by_hand():
    s_true = torch.tensor([0.9, 0.5, 0.2])
    s_neg = {
        "swap": (torch.tensor([0, 1, 2]), torch.tensor([0.1, 0.5, 0.3])),
        "count": (torch.tensor([2]), torch.tensor([0.1])),
        "relation": (torch.tensor([], dtype=torch.long), torch.tensor([])),
    }
    out = binding_scores(s_true, s_neg)
    assert out["swap"] == pytest.approx((1 + 0.5 + 0) / 3)  # a tie is half right
    assert out["count"] == 1.0 and out["relation"] is None
    assert out["mean"] == pytest.approx((0.5 + 1) / 2) and out["min"] == pytest.approx(0.5)
    assert out["n"] == {"swap": 3, "count": 1, "relation": 0}


def test_distractors_are_false_minimal_edits():
    world = ShapesWorld("heldout", seed=0)
    found = {k: 0 for k in KINDS}
    for i in range(60):
        scene, text = world.scene(i), world.caption(i)  # no rendering needed
        negs = distractors(text, scene, np.random.default_rng(i))
        assert negs == distractors(text, scene, np.random.default_rng(i))  # deterministic per stream
        for kind, neg in negs.items():
            found[kind] += 1
            assert neg.lower() != text.lower() and not claims_hold(parse_caption(neg), scene), (kind, text, neg)
            if kind == "swap":  # the same words (up to a/an), bound differently
                assert sorted(_words(neg)) == sorted(_words(text))
    assert all(found[k] > 0 for k in KINDS), found


# ---------------------------------------------------------------- hand-made encoders end to end


def _words(text: str) -> list[str]:
    """Content words: articles dropped, since an edit keeps "a"/"an" grammatical ("an orange" -> "a red")."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in ("a", "an")]


class _LookupEncoder:
    """Knows the scenes ``evaluate_split`` renders and identifies each image by its pixels."""

    image_size = 32

    def __init__(self, n: int, seed: int = 0) -> None:
        self.samples, self.index = {}, {}
        for split in ("test", "heldout"):
            samples, x = render_batch(n, self.image_size, split=split, seed=seed)
            for s, img in zip(samples, x, strict=True):
                self.index[img.numpy().tobytes()] = (split, len(self.samples.setdefault(split, [])))
                self.samples[split].append(s)
        self.split = None

    def _image(self, img: torch.Tensor) -> int:
        split, i = self.index[img.numpy().tobytes()]
        self.split = split  # evaluate_split encodes a split's images before its texts
        return i


class OracleCLIP(_LookupEncoder):
    """z_i is one-hot of the image; z_t lists which images the caption is true of, so the similarity of an image
    and a caption is positive exactly when ``claims_hold``: a perfect judge of captions."""

    def encode_image(self, images, normalize=True):
        rows = [self._image(img) for img in images]
        return F.one_hot(torch.tensor(rows), len(self.samples[self.split])).float()

    def encode_text(self, captions, normalize=True):
        scenes = [s.scene for s in self.samples[self.split]]
        z = torch.tensor([[float(claims_hold(parse_caption(c), sc)) for sc in scenes] for c in captions])
        return TextEncoding(F.normalize(z, dim=1), None, None)


class BagOfWordsCLIP(_LookupEncoder):
    """z_t is a sum of fixed random word vectors (summed in sorted order, so word order changes nothing, not even
    rounding); z_i is the bag of words of the image's own caption."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.vectors: dict[str, torch.Tensor] = {}

    def _bag(self, text: str) -> torch.Tensor:
        out = torch.zeros(256, dtype=torch.float64)
        for w in sorted(_words(text)):
            if w not in self.vectors:
                g = torch.Generator().manual_seed(len(self.vectors))
                self.vectors[w] = torch.randn(256, generator=g, dtype=torch.float64)
            out += self.vectors[w]
        return F.normalize(out, dim=0).float()

    def encode_image(self, images, normalize=True):
        rows = [self._image(img) for img in images]
        return torch.stack([self._bag(self.samples[self.split][i].caption) for i in rows])

    def encode_text(self, captions, normalize=True):
        return TextEncoding(torch.stack([self._bag(c) for c in captions]), None, None)


def test_oracle_clip_scores_one_everywhere():
    out = evaluate_clip(OracleCLIP(40), n=40, batch_size=16, probe_n=0)
    for name in ("seen", "held_out"):
        for direction in ("image_to_text", "text_to_image"):
            assert out[name]["retrieval"][direction]["R@1"] == 1.0
        b = out[name]["binding"]
        assert all(b[k] == 1.0 for k in KINDS if b["n"][k]) and b["min"] == 1.0
        assert sum(b["n"].values()) > 40
    assert out["seen"]["split"] == "test" and out["held_out"]["split"] == "heldout"


def test_bag_of_words_is_at_chance_on_swaps_only():
    out = evaluate_clip(BagOfWordsCLIP(40), n=40, batch_size=16, probe_n=0)
    for name in ("seen", "held_out"):
        b = out[name]["binding"]
        assert b["n"]["swap"] > 0 and b["swap"] == 0.5  # every swap is an exact tie
        assert all(b[k] == 1.0 for k in ("colour", "shape", "relation") if b["n"][k])


# ---------------------------------------------------------------- the command


def _micro_clip():
    from unclip.clip import CLIP, CLIPConfig, TextConfig, VisionConfig, byte_tokenizer

    torch.manual_seed(0)
    cfg = CLIPConfig(
        embed_dim=16,
        vision=VisionConfig(image_size=16, patch_size=4, width=32, layers=2, heads=2, mlp=64),
        text=TextConfig(vocab_size=259, context_length=64, width=32, layers=1, heads=2, mlp=64, eos_token_id=257),
    )
    return CLIP(cfg, byte_tokenizer(64)).eval()


def test_cli_json_and_table(tmp_path, capsys):
    _micro_clip().save_pretrained(tmp_path / "clip")
    with pytest.warns(
        UserWarning, match=r"^\d+ of \d+ captions were truncated"
    ) as caught:  # byte tokens, short context
        assert main(["eval", "clip", "--model", str(tmp_path / "clip"), "--n", "8", "--json", "--batch-size", "5"]) == 0
    assert len(caught) == 2  # one per split, not one per caption
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 8 and report["seconds"] > 0 and report["model"] == str(tmp_path / "clip")
    for name in ("seen", "held_out"):
        for direction in ("image_to_text", "text_to_image"):
            r = report[name]["retrieval"][direction]
            assert 0 <= r["R@1"] <= r["R@5"] <= 1 and set(r["chance"]) == {"R@1", "R@5"}
        b = report[name]["binding"]
        assert set(b) == {*KINDS, "mean", "min", "n"} and set(b["n"]) == set(KINDS)
        assert all(b[k] is None or 0 <= b[k] <= 1 for k in KINDS)
    with pytest.warns(UserWarning, match="truncated"):
        assert main(["eval", "clip", "--model", str(tmp_path / "clip"), "--n", "4"]) == 0
    table = capsys.readouterr().out
    assert "retrieval image→text R@1" in table and "binding swapped colours" in table and "NegCLIP" in table


def test_cli_reads_the_clip_of_a_pipeline_folder(tmp_path, capsys):
    from tiny_stack import tiny_pipeline

    tiny_pipeline(upsampler=False).save_pretrained(tmp_path / "pipe")
    results = []
    for folder in (tmp_path / "pipe", tmp_path / "pipe" / "clip"):
        assert main(["eval", "clip", "--model", str(folder), "--n", "4", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["seen"] == results[1]["seen"] and results[0]["held_out"] == results[1]["held_out"]


def test_cli_bad_model_folder(tmp_path, capsys):
    cases = {"missing": None, "empty": "", "broken_pipeline": "{not json"}
    for name, index in cases.items():
        if index is not None:
            (tmp_path / name).mkdir()
            if index:
                (tmp_path / name / "pipeline.json").write_text(index)
        assert main(["eval", "clip", "--model", str(tmp_path / name), "--n", "4"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("unclip eval: error:") and name in err and "\n" not in err, err
    _micro_clip().save_pretrained(tmp_path / "clip")
    assert main(["eval", "clip", "--model", str(tmp_path / "clip"), "--n", "1"]) == 2
    assert "n must be >= 2" in capsys.readouterr().err


def test_relation_binding_splits_by_the_axis_of_the_true_caption():
    from unclip.eval.clip_eval import relation_binding_by_axis

    captions = ["a red circle left of a blue star", "a cat", "a green square above a red heart",
                "a blue star under a pink cross", "a red circle to the right of a blue star"]  # fmt: skip
    s_true = torch.tensor([0.9, 0.0, 0.2, 0.3, 0.6])
    # Images 0 and 4 (x) beat their distractors; 2 (y) loses and 3 (y) ties; 1 has no relation distractor.
    relation = (torch.tensor([0, 2, 3, 4]), torch.tensor([0.1, 0.5, 0.3, 0.2]))
    out = relation_binding_by_axis(s_true, relation, captions)
    assert out == {"x": 1.0, "y": 0.25, "n": {"x": 2, "y": 2}}
    none_on_y = relation_binding_by_axis(s_true, (torch.tensor([0]), torch.tensor([0.95])), captions)
    assert none_on_y == {"x": 0.0, "y": None, "n": {"x": 1, "y": 0}}
