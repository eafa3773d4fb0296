from dataclasses import replace

import numpy as np
import pytest
import torch

from unclip.clip import load_clip
from unclip.data.shapes import ShapesWorld
from unclip.train.clip_stage import ClipStage, ClipStageConfig
from unclip.train.stage import Batch, get_stage


def _batch(n: int, resolution: int) -> Batch:
    world = ShapesWorld(split="train", seed=0, resolution=resolution)
    samples = [world[i] for i in range(n)]
    image = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return Batch(image, [s.caption for s in samples], [s.scene.to_json() for s in samples],
                 torch.arange(n), torch.arange(n))  # fmt: skip


def test_clip_stage_is_registered_and_presets_are_valid():
    stage = get_stage("clip")
    assert isinstance(stage, ClipStage)
    presets = stage.presets()
    assert list(presets) == ["small", "mini", "tiny", "vit-b-32"]
    assert stage.resolution(presets["small"].model) == 64
    # Configs round-trip through the run folder's JSON.
    for preset in presets.values():
        assert stage.config_from_dict(stage.config_to_dict(preset.model)) == preset.model


def test_a_few_steps_lower_the_loss_with_hard_negatives():
    stage = ClipStage()
    config = stage.presets()["tiny"].model
    torch.manual_seed(0)
    model = stage.build(config)
    batch = _batch(8, config.clip.vision.image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        out = stage.loss(model, batch, config)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert out.metrics["negatives"] >= 6  # most captions of the batch got a hard negative
    assert losses[-1] < 0.6 * losses[0], losses


def test_without_hard_negatives_there_are_none():
    stage = ClipStage()
    config = replace(stage.presets()["tiny"].model, hard_negatives=False)
    torch.manual_seed(0)
    out = stage.loss(stage.build(config), _batch(4, 32), config)
    assert out.metrics["negatives"] == 0.0
    assert abs(out.metrics["image_to_text"] - out.metrics["text_to_image"]) < 1.0


def test_engine_run_exports_a_model_folder(tmp_path):
    from unclip.train.clip_stage import export_clip
    from unclip.train.config import RunConfig, TrainConfig
    from unclip.train.engine import train

    stage = ClipStage()
    cfg = ClipStageConfig(replace(stage.presets()["tiny"].model.clip))
    run = RunConfig("clip", "tiny", stage.config_to_dict(cfg),
                    TrainConfig(steps=2, batch_size=4, lr=1e-3, lr_schedule="constant", log_every=1, sample_count=0,
                                checkpoint_every=1),
                    "shapes")  # fmt: skip
    train(run, tmp_path / "run", progress=False)
    folder = export_clip(tmp_path / "run", tmp_path / "model", ema=False)
    model = load_clip(folder)
    z, states, mask = model.encode_text(["a red circle"])
    assert z.shape == (1, 32) and states.shape == (1, 48, 64) and int(mask.sum()) >= 3

    # --step picks an earlier checkpoint: its weights, not the newest's.
    from unclip.cli.main import main
    from unclip.train.export import export_run

    first = load_clip(export_run(tmp_path / "run", tmp_path / "step1", ema=False, step=1))
    assert not torch.equal(first.encode_text(["a red circle"])[0], z)
    assert main(["export", str(tmp_path / "run"), "--raw", "--step", "2", "--out", str(tmp_path / "step2")]) == 0
    assert torch.equal(load_clip(tmp_path / "step2").encode_text(["a red circle"])[0], z)
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 7; it keeps steps 1, 2"):
        export_run(tmp_path / "run", tmp_path / "step7", step=7)


def _moved_by_one_step(config) -> tuple[set[str], dict]:
    stage = ClipStage()
    torch.manual_seed(0)
    model = stage.build(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = stage.loss(model, _batch(8, config.clip.vision.image_size), config)
    out.loss.backward()
    opt.step()
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}, out.metrics


def test_lock_image_trains_the_text_side_only():
    config = replace(ClipStage().presets()["tiny"].model, lock_image=True, pair_weight=1.0)
    moved, metrics = _moved_by_one_step(config)
    assert moved and all(k.startswith(("text.", "text_proj.", "logit_scale")) for k in moved), sorted(moved)
    assert not any(k.startswith(("visual.", "visual_proj.")) for k in moved)
    assert 0.0 <= metrics["pair_accuracy"] <= 1.0 and metrics["pairwise"] > 0


def test_lock_text_trains_the_image_side_only():
    base = ClipStage().presets()["tiny"].model
    moved, _ = _moved_by_one_step(replace(base, lock_text=True, pair_weight=1.0))
    assert moved and all(k.startswith(("visual.", "visual_proj.", "logit_scale")) for k in moved), sorted(moved)
    assert any(k.startswith("visual.") for k in moved)
    for bad, match in (({"lock_image": True}, "nothing to train"), ({"paraphrase_weight": 1.0}, "does nothing")):
        with pytest.raises(ValueError, match=match):
            replace(base, lock_text=True, **bad)


def test_trimmed_ids_change_no_embedding_and_no_gradient():
    """Training cuts the context after the longest caption: a causal tower pooled at EOT must not notice."""
    stage = ClipStage()
    config = stage.presets()["tiny"].model
    torch.manual_seed(0)
    model = stage.build(config)
    tokenizer = stage.tokenizer(config)
    captions = ["a red circle", "two blue squares and a small green star to the left of a heart", "a cross"]
    full, mask = tokenizer(captions)
    trimmed = tokenizer.trimmed(captions)
    assert trimmed.shape == (3, int(mask[1].sum())) and trimmed.shape[1] < full.shape[1]
    assert torch.equal(trimmed, full[:, : trimmed.shape[1]])
    grads = []
    for ids in (full, trimmed):
        model.zero_grad()
        z, states = model.text_features(ids)
        z.square().sum().backward()  # any function of the pooled embedding
        grads.append(torch.cat([p.grad.flatten() for p in model.text.parameters() if p.grad is not None]))
        if ids is full:
            z_full, states_full = z.detach(), states.detach()
    torch.testing.assert_close(z.detach(), z_full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(states.detach(), states_full[:, : trimmed.shape[1]], atol=1e-6, rtol=1e-5)
    # The position table's rows past the longest caption get no gradient in either case, so the two match.
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_negative_kinds_from_the_command_line_are_comma_separated():
    config = replace(ClipStage().presets()["tiny"].model, negative_kinds="swap, relation")
    assert config.negative_kinds == ("swap", "relation")
    with pytest.raises(ValueError, match="negative_kinds must be some of"):
        replace(config, negative_kinds="swap,colours")


def test_counterfactual_pairs_join_the_batch_with_their_rendered_scenes():
    from unclip.clip.loss import contrastive_loss
    from unclip.data.shapes import SceneGraph, claims_hold, parse_caption
    from unclip.data.shapes.batch import scenes_tensor
    from unclip.train.clip_batch import owned_negatives, split_counterfactuals

    stage = ClipStage()
    config = replace(stage.presets()["tiny"].model, negatives_per_caption=5, counterfactual_kinds="swap,relation")
    assert config.counterfactual_kinds == ("swap", "relation")
    batch = _batch(24, config.clip.vision.image_size)
    triples = owned_negatives(list(batch.caption), batch.scene, [int(s) for s in batch.seed], config.negative_kinds, 5)
    pairs, left = split_counterfactuals(triples, list(batch.caption), batch.scene, config.counterfactual_kinds)
    kinds = {text: kind for _, kind, text in triples}
    assert len(pairs) >= 3 and len(pairs) + len(left) == len(triples)
    for i, kind, text, scene in pairs:  # each drawn scene is one the negative describes and its source does not
        assert kind == kinds[text] and kind in ("swap", "relation")
        assert claims_hold(parse_caption(text), scene)
        assert not claims_hold(parse_caption(batch.caption[i]), scene)

    # The stage's loss is the contrastive loss over the batch extended by the pairs, plus the pair terms' metrics.
    torch.manual_seed(0)
    model = stage.build(config).eval()
    out = stage.loss(model, batch, config)
    assert out.metrics["counterfactuals"] == len(pairs) and out.metrics["negatives"] == len(left)
    images = torch.cat([batch.image, scenes_tensor([s for *_, s in pairs], batch.image.shape[-1])])
    texts = list(batch.caption) + [t for _, _, t, _ in pairs] + [t for _, t in left]
    z_i, z_all, scale = model(images, stage.tokenizer(config).trimmed(texts))
    n = len(batch.caption) + len(pairs)
    owners = torch.tensor([i for i, _ in left])
    expected = contrastive_loss(z_i, z_all[:n], scale, z_all[n:], owners)
    assert float(out.loss.detach()) == pytest.approx(float(expected.loss.detach()), rel=1e-5)
    assert 0.0 <= out.metrics["counterfactual_group"] <= out.metrics["counterfactual_text"] <= 1.0
    # The per-kind group scores average back to the overall one.
    per_kind = {k: sum(kd == k for _, kd, _, _ in pairs) for k in ("swap", "relation")}
    overall = sum(out.metrics.get(f"counterfactual_group_{k}", 0.0) * c for k, c in per_kind.items()) / len(pairs)
    assert overall == pytest.approx(out.scalars()["counterfactual_group"], abs=1e-6)

    # The separation term adds weight x (image hinge + text hinge) over the same pairs, and nothing else.
    from unclip.clip.loss import separation_loss

    separated = stage.loss(model, batch, replace(config, separation_weight=0.3, separation_margin=1.5))
    a = torch.tensor([i for i, *_ in pairs])
    b = torch.arange(len(batch.caption), n)
    hinge = separation_loss(z_i, a, b, 1.5) + separation_loss(z_all, a, b, 1.5)
    assert float(hinge.detach()) > 0.1  # a margin of 1.5 is far beyond an untrained model's pair distances
    expected_sep = float(out.loss.detach()) + 0.3 * float(hinge.detach())
    assert float(separated.loss.detach()) == pytest.approx(expected_sep, rel=1e-5)
    distance = float((z_all[a] - z_all[b]).detach().norm(dim=-1).mean())
    assert separated.metrics["counterfactual_text_distance"] == pytest.approx(distance, rel=1e-5)
    # The rendered counterfactual is the scene graph's image, as the data source renders it.
    first = SceneGraph.from_json(batch.scene[pairs[0][0]])
    assert not torch.equal(scenes_tensor([first], 32), images[len(batch.caption) : len(batch.caption) + 1])


def test_hard_negatives_made_in_a_loader_worker_give_the_loss_made_in_the_step():
    from unclip.data.datasets import ShapesSource
    from unclip.data.loader import BatchStream, make_loader
    from unclip.train.clip_batch import EDITS_KEY

    stage = ClipStage()
    config = replace(stage.presets()["tiny"].model, negatives_per_caption=5, counterfactual_kinds="swap,relation",
                     separation_weight=0.5, paraphrase_weight=0.5, relation_samples=3)  # fmt: skip
    stream = BatchStream(ShapesSource(resolution=32), resolution=32, local_batch=16, seed=3,
                         extras=stage.batch_extras(config))  # fmt: skip
    mb = next(iter(make_loader(stream, num_workers=1)))  # made in a worker process
    edits = mb.extra[EDITS_KEY]
    assert len(edits["pairs"]) >= 2 and edits["pair_images"].shape == (len(edits["pairs"]), 3, 32, 32)
    assert len(edits["paraphrases"]) >= 2 and len(edits["added"]["captions"]) == 3
    torch.manual_seed(0)
    model = stage.build(config).eval()
    prepared = stage.loss(model, Batch(mb.image, mb.caption, mb.scene, mb.index, mb.seed, mb.extra), config)
    inline = stage.loss(model, Batch(mb.image, mb.caption, mb.scene, mb.index, mb.seed), config)
    assert float(prepared.loss.detach()) == pytest.approx(float(inline.loss.detach()), rel=1e-6)
    assert prepared.scalars() == pytest.approx(inline.scalars(), rel=1e-6)
    plain = replace(
        config,
        hard_negatives=False,
        counterfactual_kinds="",
        separation_weight=0,
        paraphrase_weight=0,
        relation_samples=0,
    )
    assert stage.batch_extras(plain) is None


def test_paraphrase_term_pulls_each_relation_caption_onto_its_converse():
    from unclip.data.shapes import parse_caption
    from unclip.data.shapes.captions import CONVERSE
    from unclip.train.clip_batch import text_edits

    stage = ClipStage()
    config = replace(stage.presets()["tiny"].model, negatives_per_caption=2, counterfactual_kinds="relation")
    batch = _batch(40, config.clip.vision.image_size)
    captions, seeds = list(batch.caption), [int(s) for s in batch.seed]
    with_para = replace(config, paraphrase_weight=0.7, paraphrase_loss="cosine")
    edits = text_edits(captions, batch.scene, seeds, 32, with_para)
    texts = captions + [t for _, _, t in edits["pairs"]]
    relational = [k for k, t in enumerate(texts) if parse_caption(t).relation is not None]
    assert [k for k, _ in edits["paraphrases"]] == relational and len(relational) >= 5  # counterfactuals too
    assert any(k >= len(captions) for k in relational)
    for k, converse in edits["paraphrases"]:
        assert parse_caption(converse).phrases == parse_caption(texts[k]).phrases[::-1]

    torch.manual_seed(0)
    model = stage.build(config).eval()
    base, pulled = stage.loss(model, batch, config), stage.loss(model, batch, with_para)
    negatives = [t for _, t in edits["negatives"]]
    said_texts = [t for _, t in edits["paraphrases"]]
    _, z_all, _ = model(batch.image[:1], stage.tokenizer(config).trimmed(texts + negatives + said_texts))
    said = torch.tensor([k for k, _ in edits["paraphrases"]])
    cosine = float((z_all[said] * z_all[len(texts) + len(negatives) :]).sum(-1).mean().detach())
    assert pulled.metrics["paraphrase_cosine"] == pytest.approx(cosine, abs=1e-5)
    expected = float(base.loss.detach()) + 0.7 * (1 - cosine)
    assert float(pulled.loss.detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="paraphrase_weight must be"):
        replace(config, paraphrase_weight=-1.0)

    # The retrieval form (the default): each caption finds its converse among every text of the step.
    from unclip.clip.loss import paraphrase_retrieval_loss

    assert edits["foils"] == []  # the cosine form has no softmax to put them in
    retrieval = replace(with_para, paraphrase_loss="retrieval", paraphrase_temperature=0.2)
    foils = text_edits(captions, batch.scene, seeds, 32, retrieval)["foils"]
    # Each relation caption brings its opposite in the same order, then that opposite's converse: the caption's
    # own relation word with the objects in the other order.
    sources = [parse_caption(texts[k]) for k, _ in edits["paraphrases"] if k < len(captions)]
    assert len(foils) == 2 * len(sources) >= 6
    for source, opposite, other_order in zip(sources, foils[::2], foils[1::2], strict=True):
        opposite, other_order = parse_caption(opposite), parse_caption(other_order)
        assert opposite.phrases == source.phrases and opposite.relation == CONVERSE[source.relation]
        assert other_order.phrases == source.phrases[::-1] and other_order.relation == source.relation
    found = stage.loss(model, batch, retrieval)
    all_texts = texts + negatives + said_texts + foils
    with torch.no_grad():  # values only: the terms are recomputed here to check the loss
        _, z_all, _ = model(batch.image[:1], stage.tokenizer(config).trimmed(all_texts))
    rows = torch.arange(len(texts) + len(negatives), len(texts) + len(negatives) + len(said_texts))
    same = torch.tensor([[t == all_texts[r] for t in all_texts] for r in rows.tolist()])
    term, share = paraphrase_retrieval_loss(z_all, said, rows, 0.2, same)
    assert float(found.loss.detach()) == pytest.approx(float(base.loss.detach()) + 0.7 * float(term.detach()), rel=1e-5)
    assert found.metrics["paraphrase_found"] == pytest.approx(float(share))
    assert found.metrics["paraphrase_cosine"] == pytest.approx(cosine, abs=1e-5)
    unfoiled = stage.loss(model, batch, replace(retrieval, relation_foils=False))
    without = paraphrase_retrieval_loss(z_all[: len(all_texts) - len(foils)], said, rows, 0.2, same[:, : -len(foils)])[
        0
    ]
    assert float(unfoiled.loss.detach()) == pytest.approx(float(base.loss.detach()) + 0.7 * float(without), rel=1e-5)
    assert float(without) < float(term)  # more rows in the softmax, the same right answers
    for bad, match in (({"paraphrase_loss": "l2"}, "paraphrase_loss must be one of"),
                       ({"paraphrase_temperature": 0.0}, "paraphrase_temperature must lie")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            replace(config, **bad)


def test_separation_with_paraphrases_also_parts_each_caption_from_its_counterfactuals_converse():
    from unclip.clip.loss import separation_loss
    from unclip.train.clip_batch import text_edits

    stage = ClipStage()
    base = replace(stage.presets()["tiny"].model, negatives_per_caption=2, counterfactual_kinds="relation",
                   paraphrase_weight=0.7)  # fmt: skip
    both = replace(base, separation_weight=0.3, separation_margin=1.5)
    batch = _batch(40, 32)
    edits = text_edits(list(batch.caption), batch.scene, [int(s) for s in batch.seed], 32, base)
    c, p = len(batch.caption), len(edits["pairs"])
    texts = list(batch.caption) + [t for _, _, t in edits["pairs"]]
    negatives = [t for _, t in edits["negatives"]]
    converses = [t for _, t in edits["paraphrases"]]
    torch.manual_seed(0)
    model = stage.build(base).eval()
    images = torch.cat([batch.image, edits["pair_images"]])
    z_i, z_all, _ = model(images, stage.tokenizer(base).trimmed(texts + negatives + converses))
    a, b = torch.tensor([i for i, _, _ in edits["pairs"]]), torch.arange(c, c + p)
    # The order negatives: source caption i against the converse of its counterfactual (row c + p + N + j).
    order = [(edits["pairs"][k - c][0], c + p + len(negatives) + j) for j, (k, _) in enumerate(edits["paraphrases"])
             if k >= c]  # fmt: skip
    assert len(order) >= 2
    src, neg = torch.tensor([x for x, _ in order]), torch.tensor([y for _, y in order])
    # "X left of Y" and its counterfactual's converse "Y left of X": the same relation with the objects swapped.
    from unclip.data.shapes import parse_caption

    for x, y in order:
        source, negative = parse_caption(texts[x]), parse_caption((texts + negatives + converses)[y])
        assert negative.relation == source.relation and negative.phrases == source.phrases[::-1]
    hinge = separation_loss(z_i, a, b, 1.5) + separation_loss(z_all, a, b, 1.5) + separation_loss(z_all, src, neg, 1.5)
    with_sep, without = stage.loss(model, batch, both), stage.loss(model, batch, base)
    expected = float(without.loss.detach()) + 0.3 * float(hinge.detach())
    assert float(with_sep.loss.detach()) == pytest.approx(expected, rel=1e-5)
    distance = float((z_all[src] - z_all[neg]).detach().norm(dim=-1).mean())
    assert with_sep.metrics["order_negative_distance"] == pytest.approx(distance, rel=1e-5)


def test_counterfactual_kinds_are_checked():
    base = ClipStage().presets()["tiny"].model
    with pytest.raises(ValueError, match="counterfactual_kinds must be some of"):
        replace(base, counterfactual_kinds="count")
    with pytest.raises(ValueError, match="counterfactual_kinds must be some of"):
        replace(base, negative_kinds="colour", counterfactual_kinds="swap")
    with pytest.raises(ValueError, match="needs hard_negatives"):
        replace(base, hard_negatives=False, counterfactual_kinds="swap")
    assert replace(base, counterfactual_kinds="").counterfactual_kinds == ()
    with pytest.raises(ValueError, match="separation_weight needs counterfactual_kinds"):
        replace(base, separation_weight=0.5)
    with pytest.raises(ValueError, match="separation_margin in"):
        replace(base, counterfactual_kinds="swap", separation_weight=0.5, separation_margin=2.5)


def test_relation_samples_are_reversible_relation_captions_fixed_by_the_batch_seeds():
    from unclip.data.negatives import make_negative
    from unclip.data.shapes import SceneGraph, parse_caption, render
    from unclip.data.shapes.counterfactual import counterfactual_scene
    from unclip.train.clip_batch import relation_samples

    drawn = relation_samples(6, [3, 4, 5], 32)
    assert len(drawn["captions"]) == len(drawn["scenes"]) == len(drawn["seeds"]) == 6
    rng = np.random.default_rng(0)
    for text, scene in zip(drawn["captions"], drawn["scenes"], strict=True):
        assert isinstance(scene, SceneGraph) and parse_caption(text).relation is not None
        assert counterfactual_scene(scene, text, make_negative(text, "relation", rng)) is not None
    assert {parse_caption(t).relation for t in relation_samples(40, [1], 32)["captions"]} == {
        "left of", "right of", "above", "below"}  # fmt: skip
    # Rendered as a Shapes source renders (uint8 at 32 px, scaled to [-1, 1]).
    first = torch.from_numpy(render(drawn["scenes"][0], 32)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(drawn["images"][0], first)
    again, other = relation_samples(6, [3, 4, 5], 32), relation_samples(6, [3, 4, 6], 32)
    assert again["captions"] == drawn["captions"] and torch.equal(again["images"], drawn["images"])
    assert other["captions"] != drawn["captions"]


def test_relation_samples_join_the_batch_as_ordinary_samples_with_their_pairs():
    from unclip.train.clip_batch import batch_edits, relation_samples

    stage = ClipStage()
    config = replace(stage.presets()["tiny"].model, negatives_per_caption=5, counterfactual_kinds="swap,relation",
                     separation_weight=0.5, paraphrase_weight=0.3)  # fmt: skip
    added = replace(config, relation_samples=5)
    batch = _batch(12, 32)
    seeds = [int(s) for s in batch.seed]
    edits = batch_edits(list(batch.caption), batch.scene, seeds, 32, added)
    # Every added sample brings its places-exchanged pair (5 negatives per caption draw every kind it allows).
    assert sum(1 for i, kind, _ in edits["pairs"] if i >= 12 and kind == "relation") == 5
    assert edits["added"]["images"].shape == (5, 3, 32, 32)

    # The loss equals the plain loss of a batch that holds the added samples as its own rows.
    extra = relation_samples(5, seeds, 32)
    assert extra["captions"] == edits["added"]["captions"]
    longer = Batch(torch.cat([batch.image, extra["images"]]), list(batch.caption) + extra["captions"],
                   list(batch.scene) + extra["scenes"], torch.arange(17),
                   torch.tensor(seeds + extra["seeds"]))  # fmt: skip
    torch.manual_seed(0)
    model = stage.build(config).eval()
    with_samples, as_rows = stage.loss(model, batch, added), stage.loss(model, longer, config)
    assert float(with_samples.loss.detach()) == pytest.approx(float(as_rows.loss.detach()), rel=1e-6)
    assert with_samples.metrics["relation_samples"] == 5.0
    assert with_samples.metrics["counterfactual_group_relation"] == as_rows.metrics["counterfactual_group_relation"]
    assert stage.loss(model, batch, config).metrics["counterfactuals"] < with_samples.metrics["counterfactuals"]
    # Without hard negatives they are plain relation samples: rows, no pairs (the loader still prepares them).
    alone = replace(added, hard_negatives=False, counterfactual_kinds="", separation_weight=0, paraphrase_weight=0)
    plain = batch_edits(list(batch.caption), batch.scene, seeds, 32, alone)
    assert plain["pairs"] == [] and plain["added"]["captions"] == extra["captions"]
    assert stage.batch_extras(alone) is not None and stage.batch_extras(replace(alone, relation_samples=0)) is None

    # Bad values and data without scene graphs are clear errors.
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="relation_samples must be"):
            replace(config, relation_samples=bad)
    no_scenes = Batch(batch.image, batch.caption, [None] * 12, batch.index, batch.seed)
    with pytest.raises(ValueError, match="needs Shapes-world data"):
        stage.loss(model, no_scenes, added)


def test_placed_data_with_relation_counterfactuals_pairs_every_sample_with_its_exchanged_scene():
    """The image stage of the binding recipe through the engine (docs/clip.md, "Relations"): on ``shapes:placed=1``
    with "relation" negatives drawn as counterfactuals, each sample brings its placed pair and nothing else, and
    with ``lock_text`` a step moves the image side only."""
    from unclip.data.datasets import parse_data_spec
    from unclip.data.shapes import SceneGraph
    from unclip.data.shapes.placed import placed_caption
    from unclip.train.clip_batch import batch_edits

    stage = ClipStage()
    config = replace(stage.presets()["tiny"].model, negative_kinds="relation", counterfactual_kinds="relation",
                     pair_weight=1.0, separation_weight=1.0, lock_text=True)  # fmt: skip
    src = parse_data_spec("shapes:seed=7,placed=1", resolution=32)
    records = [src.get(i) for i in range(6)]
    image = torch.from_numpy(np.stack([r.image for r in records])).permute(0, 3, 1, 2).float() / 127.5 - 1
    batch = Batch(image, [r.caption for r in records], [r.scene for r in records], torch.arange(6), torch.arange(6))
    edits = batch_edits(batch.caption, batch.scene, [0, 1, 2, 3, 4, 5], 32, config)
    assert edits["negatives"] == [] and [i for i, *_ in edits["pairs"]] == list(range(6))
    assert [text for *_, text in edits["pairs"]] == [placed_caption(SceneGraph.from_json(r.scene), "right")
                                                     for r in records]  # fmt: skip
    torch.manual_seed(0)
    model = stage.build(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = stage.loss(model, batch, config)
    assert out.metrics["counterfactuals"] == 6 and out.metrics["negatives"] == 0
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    after = model.state_dict()
    moved = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert "visual" in moved and not moved & {"text", "text_proj"}
