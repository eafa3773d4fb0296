"""How high can a prior's cosine go? The ceiling that the caption itself puts on ``unclip eval prior``'s cosine.

A caption does not fix its image: positions, unmentioned sizes and colours, and (in 60% of Shapes-world
captions) the background are free. So even a perfect prior, one that draws z_i from the true conditional
p(z_i | caption), cannot match the held-out image's z_i. With u = z_i / |z_i| and mu_c = E[u | caption c]:

* a **perfect sampler** scores E[u' . u] = |mu_c|^2 (u' and u independent draws given c);
* the **best deterministic prediction** under mean cosine is p = mu_c / |mu_c| (it maximises p . mu_c over unit
  p), and scores |mu_c|.

Both come from one quantity, |mu_c|^2, which the mean cosine over distinct pairs of images sharing the caption
estimates without bias: E[u_a . u_b] = mu_c . mu_c for a != b. We find such images by the caption's *claims*
(``parse_caption``): a caption's wording is drawn independently of its image given the claims (``caption_text``),
so every training image whose caption makes the same claims is a draw from the same conditional. Claims that
name the same relation from either side ("A left of B", "B right of A") are the same claims.

Only held-out captions whose claims occur at least ``min_matches`` times in the training pool are measured. They
lean towards short captions, so the prior and the baselines are scored again on exactly those captions, and the
comparison is made there.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

# A relation and its converse state the same claims: canonical form keeps "left of" and "above".
_CONVERSE = {"right of": "left of", "below": "above"}


def claims_key(caption: str) -> Hashable:
    """The claims of a Shapes-world caption in a canonical, hashable form (ValueError if it is not one).

    Lists are exhaustive and unordered, so their phrases are sorted; a relation is written from the side that
    makes it "left of" or "above".
    """
    from unclip.data.shapes.captions import parse_caption

    claims = parse_caption(caption)
    phrases, relation = claims.phrases, claims.relation
    if relation is None:
        phrases = tuple(sorted(phrases, key=repr))
    elif relation in _CONVERSE:
        phrases, relation = phrases[::-1], _CONVERSE[relation]
    return (phrases, relation, claims.background)


def mean_pairwise_cosine(z: Tensor) -> float:
    """The mean cosine over the k(k-1) ordered pairs of distinct rows of ``z`` (k, D): an unbiased estimate of
    |E[u]|^2 for i.i.d. unit vectors u = z / |z|."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"need (k >= 2, D) embeddings, got {tuple(z.shape)}")
    u = F.normalize(z.double(), dim=1)
    k = u.shape[0]
    total = u.sum(0)
    return float((total @ total - k) / (k * (k - 1)))  # |sum u|^2 = k (the diagonal) + the off-diagonal pairs


@dataclass
class Ceiling:
    sampler: float  # mean over captions of |mu_c|^2: the cosine a perfect sampler of p(z_i | c) expects
    predictor: float  # mean over captions of |mu_c|: the best mean cosine any deterministic prediction can get
    per_caption: Tensor  # (C,) the |mu_c|^2 estimates

    def to_dict(self) -> dict[str, float]:
        return {"perfect_sampler": self.sampler, "best_prediction": self.predictor}


def ceiling_from_groups(groups: Sequence[Tensor]) -> Ceiling:
    """The two ceilings from groups of embeddings, one group (k_c >= 2, D) of same-claims images per caption.

    The square root of an estimate that noise pushed below zero counts as 0 (|mu_c| >= 0).
    """
    if not groups:
        raise ValueError("no caption has enough same-claims images to estimate a ceiling")
    r = torch.tensor([mean_pairwise_cosine(g) for g in groups], dtype=torch.float64)
    return Ceiling(float(r.mean()), float(r.clamp_min(0).sqrt().mean()), r)


def same_claims_pool(
    queries: Sequence[str], pool: int, *, min_matches: int, max_matches: int, split: str = "train", seed: int = 0,
    progress: bool = False,
) -> dict[int, list[int]]:  # fmt: skip
    """For each query caption whose claims the first ``pool`` captions of ``split`` make at least
    ``min_matches`` times, the first ``max_matches`` of their indices (query index -> pool indices)."""
    from unclip.data.shapes import ShapesWorld

    if not 1 <= min_matches <= max_matches:
        raise ValueError(f"need 1 <= min_matches <= max_matches, got {min_matches} and {max_matches}")
    wanted: dict[Hashable, list[int]] = {}
    for q, text in enumerate(queries):
        wanted.setdefault(claims_key(text), []).append(q)
    found: dict[Hashable, list[int]] = {key: [] for key in wanted}
    world = ShapesWorld(split=split, seed=seed)  # captions only: nothing is rendered here
    for i in tqdm(range(pool), desc=f"match claims in {split}", unit="caption", disable=not progress):
        hits = found.get(claims_key(world.caption(i)))
        if hits is not None and len(hits) < max_matches:
            hits.append(i)
    return {q: found[key] for key, qs in wanted.items() if len(found[key]) >= min_matches for q in qs}


@torch.no_grad()
def encode_pool_images(
    clip: nn.Module, indices: Sequence[int], *, split: str = "train", batch_size: int = 64, progress: bool = False
) -> dict[int, Tensor]:  # fmt: skip
    """z_i of the given Shapes-world samples, rendered and encoded exactly as ``encode_shapes`` does."""
    from unclip.data.datasets import parse_data_spec
    from unclip.data.loader import to_training_image

    source = parse_data_spec(f"shapes:split={split}", clip.image_size)
    device = next(clip.parameters()).device
    order = sorted(set(indices))
    out: dict[int, Tensor] = {}
    for s in tqdm(range(0, len(order), batch_size), desc="embed same-claims images", unit="batch",
                  disable=not progress):  # fmt: skip
        chunk = order[s : s + batch_size]
        images = torch.stack([to_training_image(source.get(i).image, clip.image_size) for i in chunk])
        z = clip.encode_image(images.to(device)).float().cpu()
        out.update(zip(chunk, z, strict=True))
    return out


def estimate_ceiling(
    clip: nn.Module, captions: Sequence[str], z_i: Tensor, *, pool: int, min_matches: int = 4,
    max_matches: int = 8, batch_size: int = 64, progress: bool = False,
) -> tuple[Ceiling | None, Tensor]:  # fmt: skip
    """The ceilings over the held-out pairs (``captions``, ``z_i``) whose claims recur in the training pool; each
    group is the held-out image plus its same-claims training images. Returns (ceiling, covered query indices);
    the ceiling is None when no caption is covered (a pool too small)."""
    if len(captions) != z_i.shape[0]:
        raise ValueError(f"{len(captions)} captions for {z_i.shape[0]} image embeddings")
    matches = same_claims_pool(captions, pool, min_matches=min_matches, max_matches=max_matches, progress=progress)
    covered = sorted(matches)
    if not covered:
        return None, torch.zeros(0, dtype=torch.long)
    z_pool = encode_pool_images(clip, [i for q in covered for i in matches[q]], batch_size=batch_size,
                                progress=progress)  # fmt: skip
    groups = [torch.cat([z_i[q : q + 1].float(), torch.stack([z_pool[i] for i in matches[q]])]) for q in covered]
    return ceiling_from_groups(groups), torch.tensor(covered, dtype=torch.long)
