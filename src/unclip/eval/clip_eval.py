"""CLIP on Shapes world: zero-shot retrieval and attribute binding, on seen and held-out compositions (issue 5).

unCLIP inherits CLIP's embedding space, and with it CLIP's blind spots: Ramesh et al. (2022, §7) name attribute
binding as unCLIP's weakness, and trace it to CLIP. This evaluation measures both what CLIP gets right and that
weakness, with exact ground truth from the Shapes world's scene graphs:

* **retrieval** R@1 / R@5, image→text and text→image, over ``n`` (image, caption) pairs. Captions are partial
  descriptions ("a red circle" is true of many scenes), so a retrieved caption or image counts as correct when
  the caption's claims hold of the image's scene graph (``claims_hold``), not only when it is the paired one.
  ``chance`` is the expected recall of a random ranking under the same relevance.
* **binding** (ARO-style, Yuksekgonul et al. 2023): each image's true caption against one distractor per kind,
  made by the NegCLIP edits of ``unclip.data.negatives`` (``swap`` colours between two objects, change one
  ``colour``, ``shape``, ``count`` or ``relation``) and kept only when it is false of the image's scene graph.
  Accuracy is the fraction of images whose true caption scores higher (cosine similarity); chance is 0.5.
  OpenAI's CLIP scores about 0.6 on ARO's relation and attribution tasks, NegCLIP about 0.7–0.8.

* **swap probe** (``unclip.eval.binding_probe``): which tower loses the binding, from scenes rendered as drawn and
  with their two colours exchanged.

Both on the ``test`` split (compositions seen in training) and on ``heldout`` (every scene holds a colour–shape
pair or relation triple that no training image contains; ``unclip.data.shapes.splits``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from unclip.data.negatives import KINDS, make_negative
from unclip.data.shapes import claims_hold, parse_caption
from unclip.data.shapes.batch import render_batch
from unclip.eval.binding_probe import PROBE_LAYOUTS, binding_probe

SPLITS = {"seen": "test", "held_out": "heldout"}
KS = (1, 5)
# Two cosine similarities closer than this are a tie (float32 noise): a bag-of-words encoder gives a swap
# distractor the same embedding as the true caption, and a tie is half right, not a coin flip of rounding.
TIE_ATOL = 1e-6
# Draws of an edit before giving up on a kind for an image: a changed relation is often true of another pair.
_TRIES = 8
REFERENCE_ARO = {"openai_clip": 0.6, "negclip": (0.7, 0.8)}
PROBE_N = 300


# ---------------------------------------------------------------- retrieval maths


def recall_at_k(sim: Tensor, relevant: Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k of queries (rows of ``sim``, (Q, C)) over candidates: a query is a hit at k when any of its k
    most similar candidates is ``relevant`` (bool (Q, C)). Ties in similarity are broken by candidate order."""
    if sim.shape != relevant.shape or sim.ndim != 2:
        raise ValueError(f"sim {tuple(sim.shape)} and relevant {tuple(relevant.shape)} must be the same (Q, C) shape")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant candidate")
    order = sim.argsort(dim=1, descending=True, stable=True)
    hits = relevant.gather(1, order)  # (Q, C): relevance of the candidates in ranked order
    first = hits.float().argmax(dim=1)  # rank of the first relevant candidate
    return {f"R@{k}": float((first < k).double().mean()) for k in ks}


def chance_recall(relevant: Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """Expected recall@k of a uniformly random ranking: 1 − C(C−r, k) / C(C, k) for a query with r relevant."""
    c = relevant.shape[1]
    r = relevant.sum(dim=1).tolist()
    return {
        f"R@{k}": float(np.mean([1 - math.comb(c - ri, k) / math.comb(c, k) if k < c else 1.0 for ri in r])) for k in ks
    }


def retrieval_scores(z_i: Tensor, z_t: Tensor, relevant: Tensor, ks: Sequence[int] = KS) -> dict[str, Any]:
    """Image→text and text→image recall of paired embeddings; ``relevant[i, j]``: caption j is true of image i."""
    sim = z_i.float() @ z_t.float().T
    return {
        "image_to_text": recall_at_k(sim, relevant, ks) | {"chance": chance_recall(relevant, ks)},
        "text_to_image": recall_at_k(sim.T, relevant.T, ks) | {"chance": chance_recall(relevant.T, ks)},
    }


def relevance(captions: Sequence[str], scenes: Sequence) -> Tensor:
    """``out[i, j]``: caption j's claims hold of scene i (the pair's own caption always does)."""
    claims = [parse_caption(c) for c in captions]
    out = torch.tensor([[claims_hold(c, s) for c in claims] for s in scenes], dtype=torch.bool)
    return out | torch.eye(len(scenes), len(captions), dtype=torch.bool)


# ---------------------------------------------------------------- binding


def distractors(caption: str, scene, rng: np.random.Generator, kinds: Sequence[str] = KINDS) -> dict[str, str]:
    """One edit of ``caption`` per kind that is false of ``scene``; a kind with no such edit is left out.

    An edit the caption parser cannot read is rejected too: it cannot be checked against the scene.
    """
    out = {}
    for kind in kinds:
        for _ in range(_TRIES):
            neg = make_negative(caption, kind, rng)
            if neg is None:  # no slot of this kind (no relation, a single colour, ...)
                break
            if neg.lower() == caption.lower():
                continue
            try:
                if claims_hold(parse_caption(neg), scene):
                    continue
            except ValueError:
                continue
            out[kind] = neg
            break
    return out


def binding_scores(s_true: Tensor, s_neg: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """Per kind, the fraction of images whose true caption beats its distractor (a tie counts half).

    ``s_true`` (N,): similarity of each image to its caption; ``s_neg[kind] = (image indices, similarities)``.
    Also ``mean`` and ``min`` over kinds (issue 5's target is on every kind) and ``n``, the images per kind.
    """
    out: dict[str, Any] = {}
    counts = {}
    for kind, (idx, s) in s_neg.items():
        counts[kind] = len(idx)
        if len(idx) == 0:
            out[kind] = None
            continue
        diff = s_true[idx].double() - s.double()
        score = torch.where(diff.abs() <= TIE_ATOL, 0.5, (diff > 0).double())
        out[kind] = float(score.mean())
    accs = [v for v in out.values() if v is not None]
    out["mean"] = float(np.mean(accs)) if accs else None
    out["min"] = float(min(accs)) if accs else None
    out["n"] = counts
    return out


# The two axes of the spatial relations: "left of" / "right of" (x) and "above" / "below" (y). Placement along one
# axis is a separate thing for an image tower to learn (docs/clip.md, "Relations: placed pairs along y").
RELATION_AXES = {"left of": "x", "right of": "x", "above": "y", "below": "y"}


def relation_binding_by_axis(
    s_true: Tensor, relation: tuple[Tensor, Tensor], captions: Sequence[str]
) -> dict[str, Any]:
    """The relation kind's binding accuracy split by the axis of the relation its true caption states
    (:data:`RELATION_AXES`); ``relation`` is :func:`binding_scores`' ``(image indices, similarities)`` of that kind."""
    idx, s = relation
    axes = [RELATION_AXES[parse_caption(captions[i]).relation] for i in idx.tolist()]
    groups = {a: torch.tensor([k for k, b in enumerate(axes) if b == a], dtype=torch.long) for a in ("x", "y")}
    scores = binding_scores(s_true, {a: (idx[k], s[k]) for a, k in groups.items()})
    return {"x": scores["x"], "y": scores["y"], "n": scores["n"]}


# ---------------------------------------------------------------- running a CLIP


@torch.no_grad()
def _encode(
    clip, images: Tensor, texts: list[str], batch_size: int, desc: str, progress: bool
) -> tuple[Tensor, Tensor]:
    steps = math.ceil(len(images) / batch_size) + math.ceil(len(texts) / batch_size)
    z_i, z_t = [], []
    with tqdm(total=steps, desc=desc, unit="batch", disable=not progress, leave=False) as bar:
        for i in range(0, len(images), batch_size):
            z_i.append(clip.encode_image(images[i : i + batch_size]).float().cpu())
            bar.update()
        # One warning for all truncated captions, not one per caption (a small context truncates many).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(0, len(texts), batch_size):
                z_t.append(clip.encode_text(texts[i : i + batch_size]).embedding.float().cpu())
                bar.update()
    truncated = 0
    for w in caught:
        if "truncated" in str(w.message):
            truncated += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if truncated:
        warnings.warn(f"{truncated} of {len(texts)} captions were truncated to the CLIP's context length", stacklevel=3)
    # Cosine geometry whatever the CLIP returns: Karlo's wrapper gives un-normalized embeddings (the prior and
    # decoder need them), retrieval and binding compare directions.
    return F.normalize(torch.cat(z_i), dim=-1), F.normalize(torch.cat(z_t), dim=-1)


def evaluate_split(
    clip, split: str, *, n: int = 1000, seed: int = 0, batch_size: int = 64, kinds: Sequence[str] = KINDS,
    progress: bool = False, probe_n: int = PROBE_N,
) -> dict[str, Any]:  # fmt: skip
    """Retrieval and binding of ``clip`` on the first ``n`` scenes of a Shapes-world ``split`` (world ``seed``),
    and the swap probe on ``min(n, probe_n)`` scene pairs (``probe_n=0``: none)."""
    if n < 2:
        raise ValueError(f"n must be >= 2 (retrieval needs candidates to choose from), got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    samples, images = render_batch(n, clip.image_size, split=split, seed=seed)
    captions = [s.caption for s in samples]
    # Image i's distractors come from its own stream: the same whatever n is.
    negs = [
        distractors(s.caption, s.scene, np.random.default_rng([seed, i, 0xB17D]), kinds) for i, s in enumerate(samples)
    ]
    texts = list(dict.fromkeys(captions + [t for d in negs for t in d.values()]))  # unique, in order
    row = {t: k for k, t in enumerate(texts)}
    z_i, z_t = _encode(clip, images, texts, batch_size, f"clip eval {split}", progress)
    z_cap = z_t[[row[c] for c in captions]]
    s_true = (z_i * z_cap).sum(dim=1)
    s_neg = {}
    for kind in kinds:
        idx = [i for i, d in enumerate(negs) if kind in d]
        rows = [row[negs[i][kind]] for i in idx]
        s_neg[kind] = (torch.tensor(idx, dtype=torch.long), (z_i[idx] * z_t[rows]).sum(dim=1))
    out = {
        "split": split,
        "n": n,
        "retrieval": retrieval_scores(z_i, z_cap, relevance(captions, [s.scene for s in samples])),
        "binding": binding_scores(s_true, s_neg),
    }
    if "relation" in s_neg:
        out["relation_binding_by_axis"] = relation_binding_by_axis(s_true, s_neg["relation"], captions)
    if probe_n > 0:  # where binding is lost (unclip.eval.binding_probe)
        # the decodability probe's layouts shrink with n too (160 at the 1,000), never below 16
        layouts = min(PROBE_LAYOUTS, max(16, n))
        out["swap_probe"] = binding_probe(clip, min(n, probe_n), split, seed, batch_size, layouts=layouts)
    return out


def evaluate_clip(
    clip, *, n: int = 1000, seed: int = 0, batch_size: int = 64, progress: bool = False, probe_n: int = PROBE_N
) -> dict[str, Any]:
    """:func:`evaluate_split` on seen (``test``) and held-out compositions, with the reference figures."""
    start = time.perf_counter()
    if hasattr(clip, "eval"):
        clip.eval()
    out: dict[str, Any] = {
        name: evaluate_split(clip, split, n=n, seed=seed, batch_size=batch_size, progress=progress, probe_n=probe_n)
        for name, split in SPLITS.items()
    }
    out.update({"n": n, "seed": seed, "reference_aro": REFERENCE_ARO, "seconds": time.perf_counter() - start})
    return out


def evaluate_data(clip, spec: str, *, n: int = 1000, batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
    """Retrieval of ``clip`` on the first ``n`` pairs of any data spec (a user's held-out images). A retrieved
    caption or image is correct when its caption equals the pair's (case and spacing folded), since such data
    has no scene graphs to judge claims against; binding needs Shapes-world captions and is left out."""
    from unclip.eval.held_out import caption_relevance, load_held_out

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    if hasattr(clip, "eval"):
        clip.eval()
    held = load_held_out(spec, n, clip.image_size, progress=progress)
    texts = list(dict.fromkeys(held.captions))
    row = {t: k for k, t in enumerate(texts)}
    z_i, z_t = _encode(clip, held.images, texts, batch_size, "clip eval data", progress)
    z_cap = z_t[[row[c] for c in held.captions]]
    result = {"split": spec, "n": len(held), "skipped": held.skipped}
    result["retrieval"] = retrieval_scores(z_i, z_cap, caption_relevance(held.captions))
    return {"data": result, "n": len(held), "seconds": time.perf_counter() - start}


def load_eval_clip(folder: str | Path, device: torch.device | str = "cpu"):
    """The CLIP of ``folder``: a CLIP model folder (ours or transformers') or an unclip pipeline folder."""
    from unclip.clip import load_clip
    from unclip.pipeline.index import clip_folder

    return load_clip(clip_folder(folder), device)


def clip_eval(
    model: str | Path, *, n: int = 1000, seed: int = 0, device: str = "cpu", batch_size: int = 64,
    progress: bool = False, data: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Load the CLIP of ``model`` (see :func:`load_eval_clip`) and run :func:`evaluate_clip`, or
    :func:`evaluate_data` on ``data`` (a data spec) when given."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    clip = load_eval_clip(model, device)
    if data is not None:
        return {"model": str(model), **evaluate_data(clip, data, n=n, batch_size=batch_size, progress=progress)}
    return {"model": str(model), **evaluate_clip(clip, n=n, seed=seed, batch_size=batch_size, progress=progress)}
