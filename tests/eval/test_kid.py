"""KID: the unbiased MMD² with the cubic kernel, checked against a direct double sum and on known distributions."""

import numpy as np
import pytest

from unclip.eval.kid import kid, mmd2_unbiased


def _direct(x, y):
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_matches_the_double_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.2, size=(9, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(_direct(x, y), rel=1e-10)


def test_unbiased_for_equal_distributions_even_at_small_n_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    # Many small draws from one distribution: the mean estimate sits at 0 within its standard error.
    same = [mmd2_unbiased(rng.normal(size=(12, 16)), rng.normal(size=(12, 16))) for _ in range(400)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    shifted = [kid(rng.normal(size=(64, 16)), rng.normal(s, 1, size=(64, 16)), subsets=5)[0] for s in (0.25, 0.5, 1.0)]
    assert 0 < shifted[0] < shifted[1] < shifted[2]


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2_unbiased(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="one D"):
        mmd2_unbiased(np.zeros((4, 3)), np.zeros((4, 2)))
