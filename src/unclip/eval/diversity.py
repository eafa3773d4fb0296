"""Sample diversity: the mean pairwise distance between the samples of one prompt, in a feature space.

The paper's claim (§5.2, Fig. 10–11) is that unCLIP keeps more diversity than GLIDE as guidance grows; we
measure it as the mean over pairs i < j of d(f_i, f_j), with cosine distance 1 − cos for CLIP embeddings (their
norm carries no meaning) and Euclidean distance for Inception features. Identical samples give 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

METRICS = ("cosine", "l2")


def mean_pairwise_distance(features: np.ndarray | torch.Tensor, metric: str = "cosine") -> float:
    """Mean of d(f_i, f_j) over the N(N−1)/2 pairs i < j of an (N, D) feature set, in float64."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    f = features.detach().cpu() if isinstance(features, torch.Tensor) else torch.from_numpy(np.asarray(features))
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"diversity needs an (N, D) feature set with N >= 2, got shape {tuple(f.shape)}")
    f = f.double()
    if not torch.isfinite(f).all():
        raise ValueError("features contain NaN or infinity")
    if metric == "cosine":
        norms = f.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            raise ValueError("cosine distance is undefined for a zero feature vector")
        u = f / norms
        d = (1.0 - u @ u.T).clamp_min(0)
    else:
        d = torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist")
    n = f.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    return float(d[iu[0], iu[1]].mean())


def diversity(groups: Iterable[np.ndarray | torch.Tensor], metric: str = "cosine") -> float:
    """Mean over prompts of the mean pairwise distance of each prompt's samples (each group (N_p, D), N_p >= 2)."""
    values = [mean_pairwise_distance(g, metric) for g in groups]
    if not values:
        raise ValueError("diversity needs at least one group of samples")
    return float(np.mean(values))
