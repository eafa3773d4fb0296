"""Improved precision and recall (Kynkäänniemi et al., 2019, "Improved Precision and Recall Metric for Assessing
Generative Models").

Each set's manifold is the union of balls around its samples, the radius of a ball being the distance to that
sample's k-th nearest neighbour in its own set (k = 3 in the paper). Precision is the fraction of generated
samples inside the real manifold; recall is the fraction of real samples inside the generated manifold.

Distances are computed in row blocks, so memory is O(block × N), never N × N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int


def _as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a (N, D) feature matrix, got shape {tuple(t.shape)}")
    t = t.double()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: features contain NaN or infinity")
    return t


def _rows_per_block(n_cols: int, max_elements: int) -> int:
    return max(1, max_elements // max(n_cols, 1))


def _pairwise_sq(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    # ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, in float64 so the expansion loses nothing that matters at these scales.
    d = (a * a).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0)


def knn_radii(features: np.ndarray | torch.Tensor, k: int = 3, *, max_elements: int = 2**24) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded), float64."""
    x = _as_tensor(features, "features")
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    x_sq = (x * x).sum(1)
    radii = torch.empty(n, dtype=torch.float64)
    step = _rows_per_block(n, max_elements)
    for i in range(0, n, step):
        d = _pairwise_sq(x[i : i + step], x, x_sq)
        # The (k+1)-th smallest: the smallest is the sample itself at distance 0.
        radii[i : i + step] = d.kthvalue(k + 1, dim=1).values.sqrt()
    return radii


def in_manifold(
    queries: np.ndarray | torch.Tensor,
    support: np.ndarray | torch.Tensor,
    radii: torch.Tensor,
    *,
    max_elements: int = 2**24,
) -> torch.Tensor:
    """Boolean per query: within radius_j of some support sample j."""
    q = _as_tensor(queries, "queries")
    s = _as_tensor(support, "support")
    if q.shape[1] != s.shape[1]:
        raise ValueError(f"feature dimensions differ: {q.shape[1]} and {s.shape[1]}")
    s_sq = (s * s).sum(1)
    r_sq = radii.double() ** 2
    inside = torch.empty(q.shape[0], dtype=torch.bool)
    step = _rows_per_block(s.shape[0], max_elements)
    for i in range(0, q.shape[0], step):
        inside[i : i + step] = (_pairwise_sq(q[i : i + step], s, s_sq) <= r_sq[None, :]).any(dim=1)
    return inside


def precision_recall(
    real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, k: int = 3, max_elements: int = 2**24
) -> PrecisionRecall:
    """Improved precision and recall of ``fake`` against ``real`` features (both (N, D)), k-NN manifolds.

    ``max_elements`` bounds each block of the distance matrix (2**24 float64 = 128 MiB).
    """
    real_t, fake_t = _as_tensor(real, "real"), _as_tensor(fake, "fake")
    if real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(f"feature dimensions differ: {real_t.shape[1]} and {fake_t.shape[1]}")
    r_real = knn_radii(real_t, k, max_elements=max_elements)
    r_fake = knn_radii(fake_t, k, max_elements=max_elements)
    precision = in_manifold(fake_t, real_t, r_real, max_elements=max_elements).double().mean().item()
    recall = in_manifold(real_t, fake_t, r_fake, max_elements=max_elements).double().mean().item()
    return PrecisionRecall(precision, recall, k, real_t.shape[0], fake_t.shape[0])
