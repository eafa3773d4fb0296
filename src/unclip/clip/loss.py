"""The symmetric contrastive loss of CLIP (Radford et al. 2021, Fig. 3), with optional hard negative captions.

For a batch of N matching (image, caption) pairs with unit embeddings z_i, z_t and temperature scale s, the
logits are s·z_i·z_tᵀ (N×N, matches on the diagonal); the loss is the mean of the cross-entropy over each row
(image → which caption) and over each column (caption → which image).

Hard negatives (NegCLIP, Yuksekgonul et al. 2023, §4): extra captions that are *almost* right for an image —
attributes swapped, a colour or relation changed — are appended as extra columns of the image → text problem,
so every image must also rank its true caption above those near misses. They add nothing to the text → image
direction: a negative caption has no image of its own.

In that softmax a near miss is one column among N + M, and its gradient is shared with every other caption of the
batch, so the few swap or relation negatives barely move the text tower: after 2,560 steps at batch 256 the
bundled small CLIP gave "a red circle and a blue square" and "a blue circle and a red square" text embeddings of
cosine 0.998, and 1,900 more steps with a negative of every kind brought them only to 0.973, still not aligned
with the images' difference (docs/clip.md, "Binding"). ``pair_weight`` adds a term aimed at exactly the binding
comparison: for every negative, the logistic loss of preferring it to its own image's true caption,
softplus(s·z_i·z_neg − s·z_i·z_t), as CE-CLIP's ranking loss does (Zhang et al. 2023, §3.2) without its margin.

Counterfactual pairs (``unclip.data.shapes.counterfactual``) complete a near miss with the image it describes, so
it enters the batch as a pair of its own and the symmetric loss ranks it in both directions. :func:`pair_terms`
scores each (source, counterfactual) pair as Winoground does (Thrush et al. 2022): the text score (each image
prefers its own caption), the image score (each caption prefers its own image), and the group score (all four
comparisons right), which is what the swap probe of ``unclip.eval.binding_probe`` measures after training.

Neither of those moves a pair that *both* towers map to one point. Every term above depends on a pair only through
differences such as s·(z_A − z_B)·t_A, so with z_A ≈ z_B and t_A ≈ t_B the gradient on each tower's difference is
proportional to the other tower's difference, and both are about zero: a saddle. Spatial relations sat there
through 1,000 steps of counterfactual training (text cosine of "left of" and "right of" captions 0.9999, image
decodability of the placement at chance; docs/clip.md). :func:`separation_loss` breaks it from within each
modality, as CE-CLIP's intra-modal term contrasts a hard negative with its positive (Zhang et al. 2023): a hinge
on the *distance* between the two embeddings of each pair, whose gradient has unit norm however close they are,
where a cosine's vanishes as they meet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ContrastiveOutput:
    loss: Tensor
    image_to_text: Tensor  # the row cross-entropy (with hard negatives, if any)
    text_to_image: Tensor
    accuracy: Tensor  # fraction of images whose best caption (negatives included) is their own
    pairwise: Tensor | None = None  # the mean pairwise term over the negatives (before pair_weight), if used
    pair_accuracy: Tensor | None = None  # fraction of negatives scored below their image's true caption


def contrastive_loss(
    z_i: Tensor,
    z_t: Tensor,
    scale: Tensor | float,
    z_neg: Tensor | None = None,
    neg_owner: Tensor | None = None,
    pair_weight: float = 0.0,
) -> ContrastiveOutput:
    """Symmetric InfoNCE over ``z_i`` ``(N, D)`` and ``z_t`` ``(N, D)``; ``z_neg`` ``(M, D)`` extra captions.

    With ``neg_owner`` ``(M,)`` (the image each negative was made for), the pairwise term above is measured, and
    added to the loss with ``pair_weight``."""
    if z_i.ndim != 2 or z_i.shape != z_t.shape:
        raise ValueError(f"z_i and z_t must both be (N, D), got {tuple(z_i.shape)} and {tuple(z_t.shape)}")
    if z_neg is not None and (z_neg.ndim != 2 or z_neg.shape[1] != z_i.shape[1]):
        raise ValueError(f"z_neg must be (M, {z_i.shape[1]}), got {tuple(z_neg.shape)}")
    logits = scale * z_i @ z_t.T
    target = torch.arange(z_i.shape[0], device=z_i.device)
    t2i = F.cross_entropy(logits.T, target)
    if z_neg is not None and z_neg.shape[0] > 0:
        logits = torch.cat([logits, scale * z_i @ z_neg.T], dim=1)
    i2t = F.cross_entropy(logits, target)
    accuracy = (logits.argmax(dim=1) == target).float().mean()
    loss = (i2t + t2i) / 2
    pairwise = pair_accuracy = None
    if neg_owner is not None and z_neg is not None and z_neg.shape[0] > 0:
        if neg_owner.shape != (z_neg.shape[0],):
            raise ValueError(f"neg_owner must be ({z_neg.shape[0]},), got {tuple(neg_owner.shape)}")
        margin = scale * ((z_i[neg_owner] * z_neg).sum(-1) - (z_i[neg_owner] * z_t[neg_owner]).sum(-1))
        pairwise = F.softplus(margin).mean()
        pair_accuracy = (margin < 0).float().mean().detach()
        if pair_weight:
            loss = loss + pair_weight * pairwise
        pairwise = pairwise.detach()
    return ContrastiveOutput(loss, i2t.detach(), t2i.detach(), accuracy.detach(), pairwise, pair_accuracy)


@dataclass
class PairTerms:
    loss: Tensor  # mean softplus over the four comparisons of every pair
    text_score: Tensor  # fraction of pairs where each image prefers its own caption
    image_score: Tensor  # fraction of pairs where each caption prefers its own image
    group_score: Tensor  # fraction of pairs where all four comparisons are right
    group: Tensor  # (P,) bool: whether each pair has all four right


def pair_terms(z_i: Tensor, z_t: Tensor, scale: Tensor | float, a: Tensor, b: Tensor) -> PairTerms:
    """The four logistic comparisons of each pair of matching rows ``a[k]``, ``b[k]`` of ``z_i`` and ``z_t``."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be index vectors of one length, got {tuple(a.shape)} and {tuple(b.shape)}")

    def s(i: Tensor, t: Tensor) -> Tensor:
        return scale * (z_i[i] * z_t[t]).sum(-1)

    aa, bb, ab, ba = s(a, a), s(b, b), s(a, b), s(b, a)  # s(image, caption)
    text = torch.stack([ab - aa, ba - bb])  # margins of the wrong caption over the right one, per image
    image = torch.stack([ba - aa, ab - bb])  # margins of the wrong image over the right one, per caption
    loss = F.softplus(torch.cat([text, image])).mean()
    text_ok, image_ok = (text < 0).all(0), (image < 0).all(0)
    group = (text_ok & image_ok).detach()
    return PairTerms(
        loss,
        text_ok.float().mean().detach(),
        image_ok.float().mean().detach(),
        group.float().mean(),
        group,
    )


def separation_loss(x: Tensor, a: Tensor, b: Tensor, margin: float) -> Tensor:
    """Mean over pairs of relu(margin − ‖x[a] − x[b]‖): each (source, counterfactual) pair's embeddings pushed at
    least ``margin`` apart, within one modality (unit embeddings: a distance of 0.5 is a cosine of 0.875)."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be index vectors of one length, got {tuple(a.shape)} and {tuple(b.shape)}")
    # The epsilon keeps the gradient finite where a pair coincides exactly (a tower blind to the edit).
    distance = ((x[a] - x[b]).square().sum(-1) + 1e-12).sqrt()
    return F.relu(margin - distance).mean()


def paraphrase_retrieval_loss(
    z: Tensor, query: Tensor, target: Tensor, temperature: float, same: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(mean cross-entropy, fraction found first) of finding each ``query`` row's paraphrase ``target`` among every
    other row of ``z``.

    ``z`` ``(T, D)`` holds unit text embeddings; row ``query[k]`` is scored against all rows but itself at
    ``1 / temperature``, and the right answer is row ``target[k]`` (SimCSE's objective, Gao et al. 2021, over the
    batch's captions, near misses and paraphrases). ``same`` ``(K, T)``, optional, marks rows that say the same as
    the target (the same text elsewhere in the batch): left out of the softmax, neither right nor wrong.

    Against a pull of each caption onto its converse alone (1 − cos), which a bag-of-words tower satisfies halfway
    and then trades against the separation hinge, every other caption of the batch competes here, its near misses
    with the same words included, so a tower that ignores word order cannot lower it. Trained on relation captions
    alone with the separation hinge, the small text tower's converse score went from 0.00 to 0.98 in 100 steps, where
    the cosine form was still at 0.00 (0.61 after 150; docs/clip.md, "Relations")."""
    if query.shape != target.shape or query.ndim != 1:
        raise ValueError(
            f"query and target must be index vectors of one length, got {tuple(query.shape)} and {tuple(target.shape)}"
        )
    logits = z[query] @ z.T / temperature
    drop = F.one_hot(query, z.shape[0]).bool()
    if same is not None:
        drop = drop | (same & ~F.one_hot(target, z.shape[0]).bool())
    logits = logits.masked_fill(drop, float("-inf"))
    found = (logits.argmax(dim=1) == target).float().mean().detach()
    return F.cross_entropy(logits, target), found
