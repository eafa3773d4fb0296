import math

import pytest
import torch

from unclip.clip import contrastive_loss


def _ce(logits_row: list[float], target: int) -> float:
    return -logits_row[target] + math.log(sum(math.exp(v) for v in logits_row))


def test_two_by_two_matches_hand_computation():
    # Unit vectors at 0° and 90° for images, 30° and 120° for captions: cosines are easy to write down.
    z_i = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    z_t = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    scale = 10.0
    sims = [[c, s], [-s, c]]  # z_i @ z_t.T
    rows = [[scale * v for v in r] for r in sims]
    cols = [[rows[0][0], rows[1][0]], [rows[0][1], rows[1][1]]]
    i2t = (_ce(rows[0], 0) + _ce(rows[1], 1)) / 2
    t2i = (_ce(cols[0], 0) + _ce(cols[1], 1)) / 2
    out = contrastive_loss(z_i, z_t, scale)
    assert float(out.image_to_text) == pytest.approx(i2t, abs=1e-12)
    assert float(out.text_to_image) == pytest.approx(t2i, abs=1e-12)
    assert float(out.loss) == pytest.approx((i2t + t2i) / 2, abs=1e-12)
    assert float(out.accuracy) == 1.0


def test_hard_negatives_enter_only_image_to_text():
    torch.manual_seed(0)
    z_i = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    z_t = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    z_neg = z_i.clone()  # negatives identical to the images: the hardest possible
    plain = contrastive_loss(z_i, z_t, 5.0)
    hard = contrastive_loss(z_i, z_t, 5.0, z_neg)
    assert float(hard.text_to_image) == pytest.approx(float(plain.text_to_image), abs=1e-12)
    assert float(hard.image_to_text) > float(plain.image_to_text) + 0.5
    # Row i of the extended logits: its own caption vs 4 captions and 4 negatives, computed by hand for row 0.
    row = [5.0 * float(z_i[0] @ v) for v in torch.cat([z_t, z_neg])]
    expected = sum(_ce([5.0 * float(z_i[k] @ v) for v in torch.cat([z_t, z_neg])], k) for k in range(4)) / 4
    assert float(hard.image_to_text) == pytest.approx(expected, abs=1e-10)
    assert row.index(max(row)) == 4  # the negative that equals image 0 beats every caption
    assert float(hard.accuracy) == 0.0


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4\) and \(3, 4\)"):
        contrastive_loss(torch.randn(2, 4), torch.randn(3, 4), 1.0)
    with pytest.raises(ValueError, match="z_neg"):
        contrastive_loss(torch.randn(2, 4), torch.randn(2, 4), 1.0, torch.randn(2, 5))


def test_pairwise_term_ranks_each_caption_above_its_own_negatives():
    torch.manual_seed(1)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, dtype=torch.float64), dim=-1)  # noqa: E731
    z_i, z_t, z_neg = unit(3, 8), unit(3, 8), unit(5, 8)
    owner = torch.tensor([0, 0, 1, 2, 2])
    base = contrastive_loss(z_i, z_t, 4.0, z_neg)
    out = contrastive_loss(z_i, z_t, 4.0, z_neg, owner, pair_weight=0.5)
    # softplus(s * (z_i[o] . z_neg - z_i[o] . z_t[o])), by hand, averaged over the 5 negatives.
    terms = [math.log1p(math.exp(4.0 * float(z_i[o] @ z_neg[k] - z_i[o] @ z_t[o]))) for k, o in enumerate(owner)]
    assert float(out.pairwise) == pytest.approx(sum(terms) / 5, abs=1e-12)
    assert float(out.loss) == pytest.approx(float(base.loss) + 0.5 * sum(terms) / 5, abs=1e-12)
    wins = [float(z_i[o] @ z_neg[k]) < float(z_i[o] @ z_t[o]) for k, o in enumerate(owner)]
    assert float(out.pair_accuracy) == pytest.approx(sum(wins) / 5)
    # Measured but not trained on at weight 0; a wrong owner shape is refused.
    assert float(contrastive_loss(z_i, z_t, 4.0, z_neg, owner).loss) == pytest.approx(float(base.loss), abs=1e-12)
    with pytest.raises(ValueError, match="neg_owner"):
        contrastive_loss(z_i, z_t, 4.0, z_neg, owner[:3], pair_weight=1.0)


def test_pairwise_gradient_pushes_each_negative_away_from_its_own_image():
    """d/dz_neg[k] of w·mean softplus(s·(z_i[o]·z_neg[k] − z_i[o]·z_t[o])) = w·σ(margin)·s·z_i[o] / M: exactly the
    gradient the term adds on top of InfoNCE's, and only along its own image."""
    torch.manual_seed(2)
    z_i = torch.nn.functional.normalize(torch.randn(2, 8, dtype=torch.float64), dim=-1)
    z_t = torch.nn.functional.normalize(torch.randn(2, 8, dtype=torch.float64), dim=-1)
    z_neg = (z_t.flip(0) + 1e-3 * torch.randn(2, 8, dtype=torch.float64)).requires_grad_(True)
    owner = torch.tensor([1, 0])

    def grad(weight):
        z_neg.grad = None
        contrastive_loss(z_i, z_t, 10.0, z_neg, owner, pair_weight=weight).loss.backward()
        return z_neg.grad.clone()

    extra = grad(0.7) - grad(0.0)
    for k, o in enumerate(owner):
        margin = 10.0 * float((z_i[o] @ z_neg[k] - z_i[o] @ z_t[o]).detach())
        expected = 0.7 * torch.sigmoid(torch.tensor(margin)) * 10.0 * z_i[o] / 2
        assert torch.allclose(extra[k], expected.to(extra.dtype), atol=1e-12)


def test_pair_terms_score_each_pair_like_winoground_by_hand():
    from unclip.clip.loss import pair_terms

    # Two pairs (0, 2) and (1, 3); s(image, caption) = 2 * z_i . z_t is set by hand through one-hot embeddings.
    z_i = torch.eye(4, dtype=torch.float64)
    z_t = torch.tensor([[0.9, 0.0, 0.1, 0.0],  # caption 0: image 0 best (right)
                        [0.0, 0.2, 0.0, 0.7],  # caption 1: prefers image 3 (wrong)
                        [0.3, 0.0, 0.6, 0.0],  # caption 2: image 2 best (right)
                        [0.0, 0.1, 0.0, 0.8]], dtype=torch.float64)  # fmt: skip
    out = pair_terms(z_i, z_t, 2.0, torch.tensor([0, 1]), torch.tensor([2, 3]))
    s = lambda i, t: 2.0 * float(z_t[t, i])  # noqa: E731  image i's score for caption t
    margins = []
    for a, b in ((0, 2), (1, 3)):
        margins += [s(a, b) - s(a, a), s(b, a) - s(b, b), s(b, a) - s(a, a), s(a, b) - s(b, b)]
    assert float(out.loss) == pytest.approx(sum(math.log1p(math.exp(m)) for m in margins) / 8, abs=1e-12)
    # Pair (0, 2): images 0 and 2 prefer their captions (0.9 > 0.3, 0.6 > 0.1) and so do the captions: all right.
    # Pair (1, 3): image 1 prefers caption 1 (0.2 > 0.1), image 3 caption 3 (0.8 > 0.7): text right; but caption
    # 1 prefers image 3 (0.7 > 0.2): image wrong.
    assert (float(out.text_score), float(out.image_score), float(out.group_score)) == (1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="index vectors"):
        pair_terms(z_i, z_t, 2.0, torch.tensor([0, 1]), torch.tensor([2]))


def test_pair_terms_gradient_moves_text_along_the_image_difference():
    """The point of a counterfactual pair: for a caption whose text cannot yet tell A from B, the gradient of the
    pair's loss on the two captions' embeddings is antisymmetric along z_i(A) - z_i(B), the image difference."""
    from unclip.clip.loss import pair_terms

    torch.manual_seed(3)
    base = torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64), dim=0)
    diff = torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64), dim=0)
    z_i = torch.stack([base + 0.1 * diff, base - 0.1 * diff])
    z_t = torch.stack([base, base]).requires_grad_(True)  # a bag-of-words text tower: both captions the same
    pair_terms(z_i, z_t, 10.0, torch.tensor([0]), torch.tensor([1])).loss.backward()
    g_a, g_b = z_t.grad
    step = -(g_a - g_b)  # a descent step moves caption A minus caption B along this
    assert torch.nn.functional.cosine_similarity(step, diff, dim=0) > 0.999


def test_separation_loss_is_a_hinge_on_distance_by_hand():
    from unclip.clip.loss import separation_loss

    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    a, b = torch.tensor([0, 2]), torch.tensor([1, 3])
    # Distances: |(0.4, -0.8)| = sqrt(0.8) ~ 0.894 and sqrt(2) ~ 1.414; only the first is inside a margin of 1.
    expected = (1.0 - math.sqrt(0.8)) / 2
    assert float(separation_loss(x, a, b, 1.0)) == pytest.approx(expected, abs=1e-9)
    assert float(separation_loss(x, a, b, 0.5)) == 0.0
    with pytest.raises(ValueError, match="index vectors"):
        separation_loss(x, a, torch.tensor([1]), 1.0)


def test_separation_loss_moves_a_pair_both_towers_confuse_where_the_pair_terms_cannot():
    """At the saddle (both images alike, both captions alike) the cross-modal pair terms give the captions' difference
    a vanishing push; the distance hinge pushes it with unit norm along whatever difference there is."""
    from unclip.clip.loss import pair_terms, separation_loss

    torch.manual_seed(4)
    base = torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64), dim=0)
    tiny = 1e-4 * torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64), dim=0)
    z_i = torch.stack([base, base + 1e-4 * torch.randn(8, dtype=torch.float64)])
    a, b = torch.tensor([0]), torch.tensor([1])

    def text_difference_push(loss_of) -> torch.Tensor:
        z_t = torch.stack([base + tiny, base - tiny]).requires_grad_(True)
        loss_of(z_t).backward()
        return z_t.grad[0] - z_t.grad[1]

    cross = text_difference_push(lambda z_t: pair_terms(z_i, z_t, 10.0, a, b).loss)
    intra = text_difference_push(lambda z_t: separation_loss(z_t, a, b, 0.5))
    assert cross.norm() < 1e-2
    # -(d/dt_a - d/dt_b) = 2 (t_a - t_b) / |t_a - t_b| (less a hair for the epsilon under the square root)
    assert intra.norm() == pytest.approx(2.0, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(-intra, tiny, dim=0) > 0.999999


def test_paraphrase_retrieval_loss_by_hand():
    """Row q against every other row at 1/τ, its paraphrase the answer; rows marked as the same text sit out."""
    from unclip.clip.loss import paraphrase_retrieval_loss

    torch.manual_seed(5)
    z = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    query, target, tau = torch.tensor([0, 2]), torch.tensor([4, 5]), 0.1

    def ce(q: int, t: int, out: set[int]) -> float:
        others = [j for j in range(6) if j != q and j not in out]
        logits = {j: float(z[q] @ z[j]) / tau for j in others}
        return -logits[t] + math.log(sum(math.exp(v) for v in logits.values()))

    loss, found = paraphrase_retrieval_loss(z, query, target, tau)
    assert float(loss) == pytest.approx((ce(0, 4, set()) + ce(2, 5, set())) / 2, rel=1e-9)
    best = [max((j for j in range(6) if j != q), key=lambda j: float(z[q] @ z[j])) for q in (0, 2)]
    assert float(found) == sum(b == t for b, t in zip(best, (4, 5), strict=True)) / 2
    # Row 1 says what row 4 says (for query 0), so it is neither right nor wrong; the target itself stays in.
    same = torch.zeros(2, 6, dtype=torch.bool)
    same[0, 1] = same[0, 4] = True
    loss, _ = paraphrase_retrieval_loss(z, query, target, tau, same)
    assert float(loss) == pytest.approx((ce(0, 4, {1}) + ce(2, 5, set())) / 2, rel=1e-9)
    with pytest.raises(ValueError, match="index vectors"):
        paraphrase_retrieval_loss(z, query, torch.tensor([4]), tau)


def test_paraphrase_retrieval_costs_an_order_blind_tower_at_least_log_two():
    """A tower blind to word order gives "X left of Y" and "Y left of X" one embedding, so the near miss ties the
    query itself and scores at least as high as any paraphrase: each such query pays >= log 2. A tower that binds
    (the converse close, the near misses far) pays close to nothing; the cosine pull, 1 − cos, cannot tell the two
    apart when the converse is equally close in both."""
    from unclip.clip.loss import paraphrase_retrieval_loss

    e = torch.eye(4, dtype=torch.float64)
    # Rows: the caption, its converse, the same words in the other order, the opposite relation.
    close = torch.nn.functional.normalize(e[0] + 0.3 * e[1], dim=0)
    blind = torch.stack([e[0], close, e[0], close])  # the near misses coincide with the caption and the converse
    binding = torch.stack([e[0], close, e[2], e[3]])
    query, target = torch.tensor([0]), torch.tensor([1])
    blind_loss, blind_found = paraphrase_retrieval_loss(blind, query, target, 0.07)
    binding_loss, binding_found = paraphrase_retrieval_loss(binding, query, target, 0.07)
    assert float(blind_loss) >= math.log(2) and float(blind_found) == 0.0
    assert float(binding_loss) < 0.01 and float(binding_found) == 1.0
    assert float(blind[0] @ blind[1]) == float(binding[0] @ binding[1])  # the cosine pull is the same for both
