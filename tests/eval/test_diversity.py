"""Diversity as mean pairwise distance: 0 for identical samples, known values for simple configurations."""

import numpy as np
import pytest

from unclip.eval import diversity, mean_pairwise_distance


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_identical_samples_have_zero_diversity(metric):
    f = np.tile(np.random.default_rng(0).standard_normal((1, 512)), (6, 1))
    assert mean_pairwise_distance(f, metric) == pytest.approx(0.0, abs=1e-12)


def test_known_values():
    # Cosine: e1, e2, -e1 → pairs (e1,e2)=1, (e1,-e1)=2, (e2,-e1)=1 → mean 4/3. Scale must not matter.
    f = np.array([[1.0, 0.0], [0.0, 5.0], [-2.0, 0.0]])
    assert mean_pairwise_distance(f, "cosine") == pytest.approx(4 / 3)
    # L2: (0,0), (3,4), (6,8) → 5, 10, 5 → mean 20/3.
    assert mean_pairwise_distance(np.array([[0.0, 0], [3, 4], [6, 8]]), "l2") == pytest.approx(20 / 3)


def test_diversity_averages_over_prompts_and_grows_with_spread():
    rng = np.random.default_rng(1)
    base = rng.standard_normal(64)
    tight = [base + 0.01 * rng.standard_normal((8, 64)) for _ in range(3)]
    loose = [base + 1.0 * rng.standard_normal((8, 64)) for _ in range(3)]
    for metric in ("cosine", "l2"):
        assert diversity(tight, metric) < diversity(loose, metric)
    two = [np.array([[0.0, 0], [3, 4]]), np.array([[0.0, 0], [0, 1]])]
    assert diversity(two, "l2") == pytest.approx(3.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="N >= 2"):
        mean_pairwise_distance(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="zero feature"):
        mean_pairwise_distance(np.zeros((2, 4)), "cosine")
    with pytest.raises(ValueError, match="metric"):
        mean_pairwise_distance(np.ones((2, 4)), "l1")
    with pytest.raises(ValueError, match="at least one"):
        diversity([])
