"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", §4).

KID is the squared maximum mean discrepancy between two feature sets under the cubic polynomial kernel
k(x, y) = (x·y / d + 1)³, estimated without bias. Unlike FID, whose plug-in estimate is biased upwards by an
amount that grows as the sample shrinks (hundreds of FID points at a few dozen images), its expectation does not
depend on the sample size: the right comparison for the small per-setting samples of ``unclip eval sweep``.
The subset average follows the reference implementation's convention (``subsets`` random subsets of
``subset_size``), whose mean and standard deviation are reported.
"""

from __future__ import annotations

import numpy as np


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² estimate between (m, d) and (n, d) features with the cubic polynomial kernel."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (N, D) arrays of one D, got {x.shape} and {y.shape}")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {m} and {n}")
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    # The diagonal terms k(x_i, x_i) are left out of the within-set means: that is what removes the bias.
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


def kid(
    real: np.ndarray, fake: np.ndarray, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD² over random subsets of ``min(subset_size, n_real, n_fake)`` from each set."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {real.shape[0]} and {fake.shape[0]}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(real[rng.choice(real.shape[0], size, replace=False)],
                      fake[rng.choice(fake.shape[0], size, replace=False)])
        for _ in range(subsets)
    ]  # fmt: skip
    return float(np.mean(values)), float(np.std(values))
