"""Improved precision and recall (k = 3) on synthetic Gaussians whose answers are known.

Tolerances: two independent samples of one distribution do not give exactly 1/1 at finite N (a k-NN ball misses
part of the support near its edge); at N = 1,500 in 8 dimensions both land near 0.90, so we require > 0.8.
Disjoint distributions give < 0.05 (measured 0/0); a generator concentrated inside the real support gives precision
> 0.98 and recall < 0.4; one that covers one of four equal, well-separated modes recalls a quarter of what it
would recall of that mode alone (± 0.04).
"""

import numpy as np
import pytest
import torch

from unclip.eval import knn_radii, precision_recall

D = 8
N = 1500


def _gauss(n, seed, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).standard_normal((n, D)) * scale + shift


def _mixture(n, seed, modes):
    rng = np.random.default_rng(seed)
    centres = np.zeros((len(modes), D))
    centres[:, 0] = np.asarray(modes, dtype=float) * 20.0  # 20σ apart: the modes never touch
    return rng.standard_normal((n, D)) + centres[rng.integers(0, len(modes), n)]


def test_a_set_against_itself_is_exactly_one_one():
    x = _gauss(400, 0)
    pr = precision_recall(x, x)
    assert (pr.precision, pr.recall) == (1.0, 1.0)


def test_identical_distributions_give_high_precision_and_recall():
    pr = precision_recall(_gauss(N, 1), _gauss(N, 2))
    assert pr.precision > 0.8 and pr.recall > 0.8, pr


def test_shifted_distribution_gives_low_precision_and_recall():
    pr = precision_recall(_gauss(N, 1), _gauss(N, 2, shift=3.0))  # 3σ per axis, ‖shift‖ = 8.5σ
    assert pr.precision < 0.05 and pr.recall < 0.05, pr


def test_a_generator_inside_the_real_support_has_full_precision_and_low_recall():
    pr = precision_recall(_gauss(N, 1), _gauss(N, 2, scale=0.5))  # measured: 0.999 / 0.19
    assert pr.precision > 0.98 and pr.recall < 0.4, pr


def test_a_generator_covering_one_of_four_modes_recalls_a_quarter():
    real = _mixture(2000, 3, modes=[0, 1, 2, 3])
    fake = _mixture(1000, 4, modes=[0])
    pr = precision_recall(real, fake)  # measured: 0.889 / 0.217
    # Within the covered mode both sets are the same Gaussian, so precision is the identical-case level (~0.9)
    # and recall is a quarter of that within-mode coverage.
    assert pr.precision > 0.8, pr
    assert pr.recall == pytest.approx(pr.precision / 4, abs=0.04), pr
    swapped = precision_recall(fake, real)  # the roles swap: a dropped mode costs precision instead
    assert swapped.recall > 0.8 and swapped.precision == pytest.approx(swapped.recall / 4, abs=0.04), swapped


def test_knn_radii_match_brute_force_and_blocks_change_nothing():
    x = _gauss(300, 5)
    d = torch.cdist(torch.from_numpy(x), torch.from_numpy(x))
    brute = d.sort(dim=1).values[:, 3]  # column 0 is the point itself
    torch.testing.assert_close(knn_radii(x, 3), brute, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(knn_radii(x, 3, max_elements=1000), brute, rtol=1e-9, atol=1e-9)
    real, fake = _gauss(300, 6), _gauss(200, 7, shift=0.5)
    assert precision_recall(real, fake, max_elements=500) == precision_recall(real, fake)


def test_bad_inputs():
    with pytest.raises(ValueError, match="k must be"):
        knn_radii(_gauss(3, 0), k=3)
    with pytest.raises(ValueError, match="dimensions differ"):
        precision_recall(_gauss(10, 0), np.zeros((10, 3)))
