"""The Fréchet distance against closed forms, and its three routes against each other."""

import numpy as np
import pytest

from unclip.eval import GaussianStats, fid_from_features, frechet_distance, frechet_distance_from_features

pytestmark = pytest.mark.filterwarnings("ignore:.*FID is biased:UserWarning")


def _random_rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_closed_form_for_diagonal_and_commuting_covariances(method):
    rng = np.random.default_rng(0)
    d = 32
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    # For commuting covariances tr (Σ₁Σ₂)^½ = Σ √(λ₁λ₂), so d² = ‖μ₁−μ₂‖² + Σ (√λ₁ − √λ₂)².
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2), method=method) == pytest.approx(expected, abs=1e-6)
    rot = _random_rotation(d, rng)  # same eigenvectors, not axis-aligned: the eigh route must not rely on diagonals
    s1, s2 = rot @ np.diag(v1) @ rot.T, rot @ np.diag(v2) @ rot.T
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, abs=1e-6)


def test_one_dimensional_closed_form():
    # N(1, 2²) vs N(-2, 0.5²): (1+2)² + (2-0.5)² = 11.25
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(11.25, abs=1e-12)


@pytest.mark.parametrize("n1,n2", [(12, 40), (300, 500)])
def test_routes_agree_for_singular_and_full_rank_covariances(n1, n2):
    rng = np.random.default_rng(1)
    d = 48
    a = rng.standard_normal((n1, d))
    b = rng.standard_normal((n2, d)) @ rng.standard_normal((d, d)) * 0.3 + 0.5
    values = [frechet_distance_from_features(a, b, method=m) for m in ("lowrank", "eigh", "sqrtm")]
    assert values[0] > 1.0
    np.testing.assert_allclose(values, values[0], rtol=1e-6)


def test_a_set_against_itself_is_zero_and_order_does_not_matter():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((64, 2048)).astype(np.float32) * 3 + 1
    g = rng.standard_normal((80, 2048)).astype(np.float32)
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(f, f[::-1]) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(f, g) == pytest.approx(fid_from_features(g, f), rel=1e-9)
    assert fid_from_features(f, g) > 1000


def test_stats_match_numpy():
    f = np.random.default_rng(3).standard_normal((20, 5))
    s = GaussianStats.from_features(f)
    np.testing.assert_allclose(s.sigma, np.cov(f, rowvar=False))
    assert s.n == 20 and s.mu.dtype == np.float64


def test_bad_statistics_are_refused():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(rng.standard_normal((1, 8)), rng.standard_normal((5, 8)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance_from_features(rng.standard_normal((5, 8)), rng.standard_normal((5, 9)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance_from_features(np.full((5, 3), np.nan), rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    not_psd = np.diag([1.0, -4.0])
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), not_psd)
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), not_psd, method="sqrtm")
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")
