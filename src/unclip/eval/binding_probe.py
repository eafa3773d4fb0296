"""Which tower loses attribute binding: a controlled swap probe (Winoground's scores, Thrush et al. 2022).

The binding accuracy of ``clip_eval`` says *that* a CLIP confuses "a red circle and a blue square" with "a blue
circle and a red square"; this probe says *where*. It takes two-object Shapes-world scenes whose objects differ in
colour and in shape, renders each as drawn (A) and with the two colours exchanged (B, every position, size and
the background unchanged), and captions both in one template, so that image and caption pairs differ only in the
binding. From the four embeddings it reports:

* ``image_cosine`` and ``text_cosine``: how far apart each tower puts the two versions (1: it cannot see the
  difference at all, as a bag-of-words text encoder cannot);
* ``alignment``: the cosine between the image difference z_i(A) − z_i(B) and the text difference
  z_t(A) − z_t(B). Matching needs both towers to move in the *same* direction; two towers that each see the swap
  but encode it differently give about 0;
* Winoground's ``text_score`` (each image scores its own caption higher), ``image_score`` (each caption scores its
  own image higher) and ``group_score`` (both). Chance is 0.25, 0.25 and 1/6; a tie counts as a failure.

A small image cosine between the versions does not mean the image tower lost the binding: the difference may be
small and still consistent. ``image_decodability`` asks the image embedding alone. For a few fixed pairs of
coloured shapes (``PROBE_COMBOS``) it draws each in many layouts of the split's two-object scenes, as bound
(red circle, blue square) and swapped (blue circle, red square), fits a logistic regression on the embeddings of
most layouts and reports its accuracy on the rest (chance 0.5). High accuracy means the binding is in z_i,
linearly readable, so a text tower *could* learn to match it; then the text side is what is missing.

``relation`` is the same probe for spatial relations: two-object scenes of equal-sized objects drawn as sampled (A,
one object clearly left of the other) and with the two objects' places exchanged (B), captioned "a red circle to
the left of a blue square" and "a red circle to the right of a blue square". Unlike a colour swap, the captions
differ by a word, so even a bag-of-words text tower *can* tell them apart; a text cosine near 1 says it learned
not to, because nothing in training needed it. Telling them apart by the word is not enough, though: "a red circle
to the left of a blue square" means "a blue square to the right of a red circle" (its converse) and the opposite of
"a blue square to the left of a red circle", which has the same words. ``converse_score`` (text only) is the
fraction of pairs where each caption is closer to its converse than to both of those (about 0.14 for random
embeddings; a bag of words, or a tower that reads the relation word but not whom it binds, scores 0), and
``converse_cosine`` the mean cosine with the converse. ``image_decodability`` there asks whether z_i says which
object is on the left.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unclip.data.shapes import ShapesWorld
from unclip.data.shapes.batch import scenes_tensor
from unclip.data.shapes.placed import RELATION_TEMPLATE, exchangeable, exchanged, placed_caption

TEMPLATE = "a {} {} and a {} {}"
# (shape 1, shape 2, colour 1, colour 2): all shapes and colours distinct; some swaps are held-out compositions.
PROBE_COMBOS = (
    ("circle", "square", "red", "blue"), ("star", "heart", "green", "purple"),
    ("triangle", "hexagon", "yellow", "cyan"), ("cross", "diamond", "orange", "pink"),
    ("square", "star", "blue", "yellow"), ("heart", "circle", "cyan", "red"),
)  # fmt: skip
PROBE_LAYOUTS = 160  # layouts per combo of image_decodability at full size
CHANCE = {"text_score": 0.25, "image_score": 0.25, "group_score": 1 / 6}


def _two_object_pairs(n: int, split: str, seed: int, max_scan: int, make, what: str) -> list[tuple[Any, Any, str, str]]:
    """The first ``n`` pairs ``make(scene)`` returns (None: skip the scene) over the two-object scenes of ``split``."""
    world = ShapesWorld(split=split, seed=seed)
    out = []
    for i in range(max_scan):
        scene = world.scene(i)
        pair = make(scene) if len(scene.objects) == 2 else None
        if pair is not None:
            out.append(pair)
            if len(out) == n:
                return out
    raise ValueError(f"only {len(out)} two-object scenes {what} in {max_scan} of {split!r}")


def swapped_pairs(
    n: int, split: str = "test", seed: int = 0, max_scan: int = 200_000
) -> list[tuple[Any, Any, str, str]]:
    """``n`` tuples (scene A, scene B with the two colours exchanged, caption of A, caption of B)."""

    def make(scene):  # -> tuple | None
        a, b = scene.objects
        if a.colour == b.colour or a.shape == b.shape:  # a swap would change nothing, or nothing nameable
            return None
        swapped = dataclasses.replace(
            scene, objects=(dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour))
        )
        return (scene, swapped, TEMPLATE.format(a.colour, a.shape, b.colour, b.shape),
                TEMPLATE.format(b.colour, a.shape, a.colour, b.shape))  # fmt: skip

    return _two_object_pairs(n, split, seed, max_scan, make, "with distinct colours and shapes")


def placed_pairs(
    n: int, split: str = "test", seed: int = 0, max_scan: int = 200_000
) -> list[tuple[Any, Any, str, str]]:
    """``n`` tuples (scene A, scene B with the two objects' places exchanged, caption of A, caption of B)."""

    def make(scene):  # -> tuple | None
        text = placed_caption(scene)
        return None if text is None else (scene, exchanged(scene), text, placed_caption(scene, "right"))

    return _two_object_pairs(n, split, seed, max_scan, make, "fit for a relation pair")


def converse_texts(pairs: list[tuple[Any, Any, str, str]]) -> list[list[str]]:
    """Four captions per :func:`placed_pairs` pair, as four lists: A ("X left of Y"), A's converse ("Y right of
    X"), B (A's order, the other word: "X right of Y") and B's converse ("Y left of X": A's words, the other order)."""
    texts: list[list[str]] = [[], [], [], []]
    for scene, _, _, _ in pairs:
        a, b = sorted(scene.objects, key=lambda o: o.x)
        for k, (first, word, second) in enumerate(((a, "left", b), (b, "right", a), (a, "right", b), (b, "left", a))):
            texts[k].append(RELATION_TEMPLATE.format(first.colour, first.shape, word, second.colour, second.shape))
    return texts


def converse_scores(clip, pairs: list[tuple[Any, Any, str, str]], batch_size: int = 64) -> dict[str, float]:
    """``converse_score`` and ``converse_cosine`` of :func:`placed_pairs` (see the module docstring)."""
    texts = converse_texts(pairs)

    def encode(chunk: list[str]) -> Tensor:
        rows = [clip.encode_text(chunk[i : i + batch_size]).embedding for i in range(0, len(chunk), batch_size)]
        return F.normalize(torch.cat(rows).double().cpu(), dim=-1)

    t_a, c_a, t_b, c_b = (encode(t) for t in texts)
    cos = lambda x, y: (x * y).sum(-1)  # noqa: E731
    # A's converse must beat B and B's converse; B's converse must beat A and A's converse.
    ok_a = (cos(t_a, c_a) > cos(t_a, t_b)) & (cos(t_a, c_a) > cos(t_a, c_b))
    ok_b = (cos(t_b, c_b) > cos(t_b, t_a)) & (cos(t_b, c_b) > cos(t_b, c_a))
    converse = torch.cat([cos(t_a, c_a), cos(t_b, c_b)])
    return {"converse_score": float((ok_a & ok_b).double().mean()), "converse_cosine": float(converse.mean())}


def probe_scores(z_a: Tensor, z_b: Tensor, t_a: Tensor, t_b: Tensor) -> dict[str, float]:
    """The probe's figures from image embeddings of A and B and text embeddings of their captions, all ``(n, D)``."""
    z_a, z_b, t_a, t_b = (F.normalize(x.double(), dim=-1) for x in (z_a, z_b, t_a, t_b))
    s_aa, s_ab, s_ba, s_bb = ((x * y).sum(-1) for x, y in ((z_a, t_a), (z_a, t_b), (z_b, t_a), (z_b, t_b)))
    text = (s_aa > s_ab) & (s_bb > s_ba)  # each image prefers its own caption
    image = (s_aa > s_ba) & (s_bb > s_ab)  # each caption prefers its own image
    dz, dt = z_a - z_b, t_a - t_b
    aligned = (F.normalize(dz, dim=-1) * F.normalize(dt, dim=-1)).sum(-1)
    # A tower that cannot tell A from B has no difference direction: its alignment is 0, not NaN.
    aligned = torch.where((dz.norm(dim=-1) > 1e-9) & (dt.norm(dim=-1) > 1e-9), aligned, torch.zeros_like(aligned))
    return {
        "image_cosine": float((z_a * z_b).sum(-1).mean()),
        "text_cosine": float((t_a * t_b).sum(-1).mean()),
        "alignment": float(aligned.mean()),
        "text_score": float(text.double().mean()),
        "image_score": float(image.double().mean()),
        "group_score": float((text & image).double().mean()),
    }


@torch.no_grad()
def pair_probe_scores(clip, pairs: list[tuple[Any, Any, str, str]], batch_size: int = 64) -> dict[str, float]:
    """:func:`probe_scores` of ``pairs`` (scene A, scene B, caption of A, caption of B) encoded by ``clip``."""

    def encode(k: int, text: bool) -> Tensor:
        out = []
        for i in range(0, len(pairs), batch_size):
            chunk = [p[k] for p in pairs[i : i + batch_size]]
            if text:
                out.append(clip.encode_text(chunk).embedding.float().cpu())
            else:
                out.append(clip.encode_image(scenes_tensor(chunk, clip.image_size)).float().cpu())
        return torch.cat(out)

    return probe_scores(encode(0, False), encode(1, False), encode(2, True), encode(3, True))


@torch.no_grad()
def binding_probe(
    clip, n: int = 300, split: str = "test", seed: int = 0, batch_size: int = 64, layouts: int = PROBE_LAYOUTS
) -> dict[str, Any]:  # fmt: skip
    """Run the probe on ``n`` scene pairs of ``split`` with ``clip`` (anything with encode_image / encode_text),
    and :func:`image_decodability` on ``layouts`` layouts (0: skip it)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    swapped = pair_probe_scores(clip, swapped_pairs(n, split, seed), batch_size)
    out = {"n": n, "split": split, "template": TEMPLATE, **swapped, "chance": CHANCE}
    placed = placed_pairs(n, split, seed)
    relation = pair_probe_scores(clip, placed, batch_size)
    out["relation"] = {"template": RELATION_TEMPLATE, **relation, **converse_scores(clip, placed, batch_size)}
    if layouts:
        decodable = image_decodability(clip.encode_image, clip.image_size, layouts, min(100, layouts * 5 // 8), split,
                                       seed, batch_size=batch_size)  # fmt: skip
        out["image_decodability"] = decodable["accuracy"]
        out["image_decodability_detail"] = decodable
        out["chance"] = {**CHANCE, "image_decodability": decodable["chance"]}
        placement = image_decodability(clip.encode_image, clip.image_size, layouts, min(100, layouts * 5 // 8),
                                       split, seed, batch_size=batch_size, edit="placement")  # fmt: skip
        out["relation"]["image_decodability"] = placement["accuracy"]
        out["relation"]["image_decodability_detail"] = placement
    return out


def two_object_layouts(n: int, split: str = "test", seed: int = 0, max_scan: int = 200_000, fit=None) -> list[Any]:
    """The first ``n`` two-object scenes of ``split`` (of which ``fit(scene)`` holds, if given): positions, sizes and
    backgrounds for the decodability probe."""
    world = ShapesWorld(split=split, seed=seed)
    scenes = (world.scene(i) for i in range(max_scan))
    out = list(itertools.islice((s for s in scenes if len(s.objects) == 2 and (fit is None or fit(s))), n))
    if len(out) < n:
        raise ValueError(f"only {len(out)} two-object scenes {'that fit ' if fit else ''}in {max_scan} of {split!r}")
    return out


def bound_and_swapped(layouts: list[Any], combo: tuple[str, str, str, str]) -> tuple[list[Any], list[Any]]:
    """Each layout with (colour 1 shape 1, colour 2 shape 2) and with the colours swapped, objects kept in place."""
    s1, s2, c1, c2 = combo
    bound, swapped = [], []
    for scene in layouts:
        a, b = scene.objects
        for out, (ca, cb) in ((bound, (c1, c2)), (swapped, (c2, c1))):
            objects = (dataclasses.replace(a, shape=s1, colour=ca), dataclasses.replace(b, shape=s2, colour=cb))
            out.append(dataclasses.replace(scene, objects=objects))
    return bound, swapped


def left_and_right(layouts: list[Any], combo: tuple[str, str, str, str]) -> tuple[list[Any], list[Any]]:
    """Each :func:`exchangeable` layout with (colour 1 shape 1) on the left of (colour 2 shape 2), and with the two
    objects' places exchanged: the same two objects, only their placement differs."""
    s1, s2, c1, c2 = combo
    left, right = [], []
    for scene in layouts:
        a, b = sorted(scene.objects, key=lambda o: o.x)
        for out, ((sa, ca), (sb, cb)) in ((left, ((s1, c1), (s2, c2))), (right, ((s2, c2), (s1, c1)))):
            objects = (dataclasses.replace(a, shape=sa, colour=ca), dataclasses.replace(b, shape=sb, colour=cb))
            out.append(dataclasses.replace(scene, objects=objects))
    return left, right


def linear_probe_accuracy(x_pos: Tensor, x_neg: Tensor, n_train: int, l2: float = 1e-3) -> float:
    """Held-out accuracy of an L2-regularised logistic regression telling ``x_pos`` rows from ``x_neg`` rows.

    Fitted (L-BFGS, features standardised by the training rows) on the first ``n_train`` rows of each, scored on
    the rest; a feature set that cannot tell them apart predicts one class for all and scores exactly 0.5.
    """
    if not 0 < n_train < min(len(x_pos), len(x_neg)):
        raise ValueError(f"n_train must leave rows to test on: {n_train} of {len(x_pos)} and {len(x_neg)}")
    x_pos, x_neg = x_pos.double(), x_neg.double()
    train = torch.cat([x_pos[:n_train], x_neg[:n_train]])
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # a constant feature carries nothing: leave it at 0

    def scaled(x: Tensor) -> Tensor:
        return (x - mean) / std

    y = torch.cat([torch.ones(n_train), torch.zeros(n_train)]).double()
    w = torch.zeros(train.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(scaled(train) @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        right = torch.cat([scaled(x_pos[n_train:]) @ w + b > 0, scaled(x_neg[n_train:]) @ w + b <= 0])
    return float(right.double().mean())


@torch.no_grad()
def image_decodability(
    encode_image, resolution: int, n: int = 160, n_train: int = 100, split: str = "test", seed: int = 0,
    combos: tuple[tuple[str, str, str, str], ...] = PROBE_COMBOS, batch_size: int = 64, edit: str = "binding",
) -> dict[str, Any]:  # fmt: skip
    """Whether the image embedding alone tells bound from swapped (``edit="binding"``), or which of two objects is
    on the left (``edit="placement"``): linear-probe accuracy per combo (see the module docstring).
    ``encode_image`` maps (B, 3, R, R) images in [-1, 1] to (B, D) features."""
    if edit not in EDITS:
        raise ValueError(f"edit must be one of {', '.join(EDITS)}, got {edit!r}")
    layouts = two_object_layouts(n, split, seed, fit=exchangeable if edit == "placement" else None)

    def encode(scenes: list[Any]) -> Tensor:
        return torch.cat([
            encode_image(scenes_tensor(scenes[i : i + batch_size], resolution)).float().cpu()
            for i in range(0, len(scenes), batch_size)
        ])  # fmt: skip

    per_combo = {}
    for combo in combos:
        bound, swapped = EDITS[edit](layouts, combo)
        s1, s2, c1, c2 = combo
        per_combo[f"{c1} {s1} + {c2} {s2}"] = linear_probe_accuracy(encode(bound), encode(swapped), n_train)
    return {"accuracy": sum(per_combo.values()) / len(per_combo), "per_combo": per_combo, "n_layouts": n,
            "n_train": n_train, "chance": 0.5}  # fmt: skip


EDITS = {"binding": bound_and_swapped, "placement": left_and_right}
