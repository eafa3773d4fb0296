"""The CLIP stage's batch preparation: hard negatives, counterfactual pairs, paraphrases and added relation samples.

Pure CPU work on captions and scene graphs, run per micro-batch in the data loader's workers
(:meth:`unclip.train.clip_stage.ClipStage.batch_extras`) or in the step when a batch lacks it. NegCLIP hard
negatives (Yuksekgonul et al. 2023): per caption, ``negatives_per_caption`` word-level edits of a random kind
(``unclip.data.negatives``), dropped when true of the sample's Shapes-world scene graph; negatives of sample i come
from sample i's own seed, so they do not depend on batch splitting. A negative of ``counterfactual_kinds`` whose
scene the Shapes world can draw (``unclip.data.shapes.counterfactual``) becomes a pair of the batch with its
rendered image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from unclip.data.negatives import hard_negatives, make_negative
from unclip.data.shapes import SceneGraph, ShapesWorld, claims_hold, converse_caption, parse_caption
from unclip.data.shapes.batch import scenes_tensor
from unclip.data.shapes.counterfactual import counterfactual_scene

# A sample's scene: JSON as the loader gives it (None, or a folder's side file, when there is no scene graph) or a
# graph already read.
Scene = dict[str, Any] | SceneGraph | None

if TYPE_CHECKING:
    from unclip.train.clip_stage import ClipStageConfig


def _scene_check(scene: Scene):  # -> Callable[[str], bool] | None
    """A predicate "this caption is true of the scene", or None when there is no scene graph to check against."""
    graph = _scene_graph(scene)
    if graph is None:  # no check possible
        return None

    def holds(text: str) -> bool:
        try:
            return claims_hold(parse_caption(text), graph)
        except ValueError:
            return False  # an edit the parser cannot read cannot be checked; it is a word-level edit of a lie

    return holds


def batch_negatives(
    captions: list[str], scenes: list[Scene], seeds: list[int], kinds: tuple[str, ...], per_caption: int
) -> list[str]:
    """Up to ``per_caption`` hard negatives per caption, each of a different kind, false of its scene if known."""
    return [text for _, _, text in owned_negatives(captions, scenes, seeds, kinds, per_caption)]


def owned_negatives(
    captions: list[str], scenes: list[Scene], seeds: list[int], kinds: tuple[str, ...], per_caption: int
) -> list[tuple[int, str, str]]:
    """:func:`batch_negatives` as ``(index of the caption it was made from, kind, negative)``."""
    out = []
    for i, (text, scene, seed) in enumerate(zip(captions, scenes, seeds, strict=True)):
        rng = np.random.default_rng([int(seed), 0x4E6567])  # sample i's own stream
        holds = _scene_check(scene)
        options = [kn for kn in hard_negatives(text, rng, kinds).items() if holds is None or not holds(kn[1])]
        order = rng.permutation(len(options))
        out.extend((i, *options[k]) for k in order[:per_caption])
    return out


def split_counterfactuals(
    owned: list[tuple[int, str, str]], captions: list[str], scenes: list[Scene], kinds: tuple[str, ...]
) -> tuple[list[tuple[int, str, str, Any]], list[tuple[int, str]]]:
    """``owned`` negatives as (counterfactual pairs ``(owner, kind, caption, scene)``, negatives left
    ``(owner, text)``).

    A negative of one of ``kinds`` becomes a pair when its owner has a Shapes-world scene graph that
    :func:`counterfactual_scene` can edit into one the negative describes."""
    pairs, left = [], []
    graphs: dict[int, Any] = {}
    for i, kind, text in owned:
        edited = None
        if kind in kinds:
            if i not in graphs:
                graphs[i] = _scene_graph(scenes[i])
            if graphs[i] is not None:
                edited = counterfactual_scene(graphs[i], captions[i], text)
        if edited is None:
            left.append((i, text))
        else:
            pairs.append((i, kind, text, edited))
    return pairs, left


def text_edits(
    captions: list[str], scenes: list[Scene], seeds: list[int], resolution: int, config: ClipStageConfig
) -> dict[str, Any]:
    """A batch's hard negatives, split as :func:`split_counterfactuals` does: ``pairs`` ``(owner, kind, caption)``
    with ``pair_images`` (their scenes rendered at ``resolution`` as the Shapes source renders, or None) and the
    remaining ``negatives`` ``(owner, text)``; and, with ``paraphrase_weight``, ``paraphrases`` ``(k, text)``: the
    converse of caption k of captions + pairs' captions. Pure CPU work: :meth:`ClipStage.batch_extras` runs it in
    the loader."""
    pairs: list[tuple[int, str, str, Any]] = []
    left: list[tuple[int, str]] = []
    if config.hard_negatives:
        graphs = [_scene_graph(scene) for scene in scenes]  # read each scene once for both steps
        triples = owned_negatives(captions, graphs, seeds, config.negative_kinds, config.negatives_per_caption)
        pairs, left = split_counterfactuals(triples, captions, graphs, config.counterfactual_kinds)
    paraphrases = []
    if config.paraphrase_weight:
        texts = captions + [text for _, _, text, _ in pairs]
        owners = list(range(len(captions))) + [i for i, *_ in pairs]  # a counterfactual draws from its source's seed
        for k, (text, i) in enumerate(zip(texts, owners, strict=True)):
            converse = converse_caption(text, np.random.default_rng([int(seeds[i]), 0x436F6E76, k]))
            if converse is not None:
                paraphrases.append((k, converse))
    foils = []
    if config.paraphrase_weight and config.paraphrase_loss == "retrieval" and config.relation_foils:
        for k, _ in paraphrases:  # the sources' own; a counterfactual's opposite is its source
            if k < len(captions):
                foils.extend(relation_foils(captions[k], np.random.default_rng([int(seeds[k]), 0x466F696C])))
    drawn = scenes_tensor([scene for *_, scene in pairs], resolution) if pairs else None
    return {"pairs": [(i, kind, text) for i, kind, text, _ in pairs], "pair_images": drawn, "negatives": left,
            "paraphrases": paraphrases, "foils": foils}  # fmt: skip


def relation_foils(text: str, rng: np.random.Generator) -> list[str]:
    """The near misses of a relation caption that a tower blind to word order confuses with its converse: the
    opposite relation in the same order ("a star right of a square") and that opposite's converse ("a square left of
    a star": the same words in the other order). Fewer, or none, when ``text`` states no relation."""
    opposite = hard_negatives(text, rng, ("relation",)).get("relation")
    other_order = converse_caption(opposite, rng) if opposite is not None else None
    return [t for t in (opposite, other_order) if t is not None]


RELATION_SAMPLES_STREAM = 0x52656C53  # "RelS": the added samples' random stream, apart from the negatives'


def relation_samples(k: int, seeds: list[int], resolution: int) -> dict[str, Any]:
    """``k`` train-split Shapes-world samples whose captions state a relation that the counterfactual renderer can
    reverse (their "relation" negative has a drawn scene), from a stream fixed by the micro-batch's ``seeds``:
    ``captions``, ``scenes`` (:class:`SceneGraph` s), ``seeds`` (theirs, for their negatives) and ``images``
    rendered at ``resolution`` as the Shapes source renders."""
    world = ShapesWorld(split="train", seed=0, relation_rate=1.0)
    rng = np.random.default_rng([RELATION_SAMPLES_STREAM, *seeds])
    captions, scenes, own_seeds = [], [], []
    while len(captions) < k:  # about one scene in three qualifies
        i = int(rng.integers(2**40))
        text, scene = world.captioned(i)
        opposite = make_negative(text, "relation", rng)  # deterministic: the relation word's opposite, or None
        if opposite is not None and counterfactual_scene(scene, text, opposite) is not None:
            captions.append(text)
            scenes.append(scene)
            own_seeds.append(int(rng.integers(2**31)))
    return {"captions": captions, "scenes": scenes, "seeds": own_seeds, "images": scenes_tensor(scenes, resolution)}


def batch_edits(
    captions: list[str], scenes: list[Scene], seeds: list[int], resolution: int, config: ClipStageConfig
) -> dict[str, Any]:
    """:func:`text_edits` of the batch, after ``config.relation_samples`` added samples (:func:`relation_samples`,
    under ``added``: their captions and images follow the batch's own in the loss)."""
    added = None
    if config.relation_samples:
        graphs = [_scene_graph(scene) for scene in scenes]  # parsed once; text_edits takes graphs as they are
        if any(graph is None for graph in graphs):
            raise ValueError(
                "model.relation_samples adds Shapes-world scenes to each batch; it needs Shapes-world data "
                "(--data shapes...), whose samples carry scene graphs"
            )
        added = relation_samples(config.relation_samples, seeds, resolution)
        captions, scenes, seeds = captions + added["captions"], graphs + added["scenes"], seeds + added["seeds"]
    edits = text_edits(captions, scenes, seeds, resolution, config)
    edits["added"] = None if added is None else {"captions": added["captions"], "images": added["images"]}
    return edits


EDITS_KEY = "clip_text_edits"


def micro_batch_edits(mb: Any, config: ClipStageConfig) -> dict[str, Any]:
    seeds = [int(s) for s in mb.seed]
    return {EDITS_KEY: batch_edits(list(mb.caption), mb.scene, seeds, mb.image.shape[-1], config)}


def _scene_graph(scene: Scene) -> SceneGraph | None:
    """A batch's scene (JSON, as the loader gives it) as a graph; a graph as it is; None when there is none."""
    if scene is None or isinstance(scene, SceneGraph):
        return scene
    if not scene:
        return None
    try:
        return SceneGraph.from_json(scene)
    except ValueError:  # a folder's KEY.json side file, not a Shapes scene
        return None
