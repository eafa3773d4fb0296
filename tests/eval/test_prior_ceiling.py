"""The ceiling a caption puts on a prior's cosine (unclip.eval.prior_ceiling): its maths and its matching."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from unclip.data.shapes import ShapesWorld
from unclip.eval.prior_ceiling import ceiling_from_groups, claims_key, mean_pairwise_cosine, same_claims_pool


def _draws(mu: torch.Tensor, spread: float, n: int, g: torch.Generator) -> torch.Tensor:
    """n unit vectors scattered around the direction mu (a stand-in for p(z_i | caption))."""
    return F.normalize(mu + spread * torch.randn(n, mu.shape[0], generator=g, dtype=torch.float64), dim=1)


def test_mean_pairwise_cosine_is_the_mean_over_distinct_pairs():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 7, generator=g) * torch.rand(5, 1, generator=g) * 3  # norms differ: cosines, not dots
    u = F.normalize(z.double(), dim=1)
    pairs = [float(u[a] @ u[b]) for a, b in itertools.permutations(range(5), 2)]
    assert mean_pairwise_cosine(z) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    with pytest.raises(ValueError, match="k >= 2"):
        mean_pairwise_cosine(z[:1])


def test_the_ceilings_are_what_a_perfect_sampler_and_the_best_prediction_score():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(16, generator=g, dtype=torch.float64)
    mu = mu / mu.norm()
    population = _draws(mu, 0.15, 200_000, g)
    mean_u = population.mean(0)
    truth = _draws(mu, 0.15, 20_000, g)  # held-out "true images"

    # Many small groups (3 images each, as for a rare caption), all from this one conditional.
    ceiling = ceiling_from_groups([_draws(mu, 0.15, 3, g) for _ in range(4_000)])
    assert ceiling.per_caption.shape == (4_000,)
    sampler = (_draws(mu, 0.15, 20_000, g) * truth).sum(1).mean()  # a perfect sampler: independent draws
    best = (truth @ (mean_u / mean_u.norm())).mean()  # the normalized conditional mean
    assert 0.6 < sampler < 0.95  # the spread makes this a real test, neither 0 nor 1
    assert ceiling.sampler == pytest.approx(float(sampler), abs=0.01)
    assert ceiling.sampler == pytest.approx(float(mean_u @ mean_u), abs=0.01)  # |E u|^2
    assert float(best) == pytest.approx(float(mean_u.norm()), abs=0.01)  # |E u|
    # best_prediction is the mean of per-group sqrt estimates: within a few thousandths of |E u| for groups of 3
    assert ceiling.predictor == pytest.approx(float(best), abs=0.02)
    # and no other direction does better than the normalized mean
    for _ in range(5):
        other = F.normalize(mean_u + 0.2 * torch.randn(16, generator=g, dtype=torch.float64), dim=0)
        assert (truth @ other).mean() < best


def test_a_deterministic_conditional_has_both_ceilings_at_1_and_noise_below_zero_counts_as_0():
    z = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.5, 1.0, 0.0]])  # one direction, different norms
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # estimate -1 for this group
    c = ceiling_from_groups([z, opposite])
    assert c.per_caption.tolist() == pytest.approx([1.0, -1.0])
    assert c.sampler == pytest.approx(0.0) and c.predictor == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no caption"):
        ceiling_from_groups([])


def test_claims_keys_ignore_wording_order_and_the_side_a_relation_is_told_from():
    same = [
        ("a red circle and two blue squares", "two squares in blue and a red disc"),
        ("a picture of a red circle to the left of a blue square", "a blue square to the right of a red circle"),
        ("a green star above a small heart", "a little heart below a green star"),
    ]
    for a, b in same:
        assert claims_key(a) == claims_key(b), (a, b)
    different = [
        ("a red circle and two blue squares", "a blue circle and two red squares"),  # swapped colours
        ("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
        ("a red circle", "a red circle on a black background"),
        ("a red circle", "a large red circle"),
    ]
    for a, b in different:
        assert claims_key(a) != claims_key(b), (a, b)
    with pytest.raises(ValueError):
        claims_key("a photograph of the sea")


def test_same_claims_pool_matches_a_brute_force_search():
    world = ShapesWorld(split="train")
    pool_keys = [claims_key(world.caption(i)) for i in range(3_000)]
    queries = [ShapesWorld(split="test").caption(i) for i in range(60)]
    found = same_claims_pool(queries, 3_000, min_matches=2, max_matches=3)
    assert found  # some short captions recur in 3,000
    for q, text in enumerate(queries):
        expected = [i for i, k in enumerate(pool_keys) if k == claims_key(text)]
        if len(expected) >= 2:
            assert found[q] == expected[:3]
        else:
            assert q not in found
    with pytest.raises(ValueError, match="min_matches"):
        same_claims_pool(queries, 10, min_matches=4, max_matches=2)
