"""PCA whitening of the decoder's z_i input: every direction CLIP varies in reaches the decoder at one scale.

Why: the Shapes-world CLIP's image embeddings have an effective rank of about 15 out of 256, and what tells a
scene from its colour-swapped twin lies partly in directions of small variance (components 32–128 hold 0.2% of the
data's variance but 4.6% of a swap's difference). A linear probe reads the swap from z_i at 0.99, yet the bundled
decoder's z_i projections put a swapped pair at 0.11–0.22 of the distance between two random images (docs/results.md,
"Whitening z_i"). Gradient descent learns a linear map's faint input directions slowly, Adam included, since its
per-coordinate scaling works in the raw basis where every coordinate mixes the loud directions with the faint.
Whitening is the classic preconditioner (LeCun et al. 1998, "Efficient BackProp", §4.3): the decoder sees
w = Mᵀ(z − μ) with M = V (Λ + εI)^{-1/2}, so each principal direction has about unit variance; the floor ε
(relative to the largest eigenvalue) keeps directions CLIP never uses from being blown up into noise.

The map is affine and invertible, so a decoder trained on raw z_i can be given it without changing what it
computes (:func:`fold_into_linear`): fine-tuning then starts from the same function and differs only in the
geometry of its gradient steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MIN_ROWS_PER_DIM = 2  # fewer embeddings than this many per dimension estimate the small eigenvalues badly


def pca_whitening(z: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """(μ, M) with ``(z − μ) @ M`` of (about) identity covariance; eigenvalues below ``floor·λ_max`` are lifted.

    Computed in float64 and returned in float32. ``M``'s columns are the principal directions, largest first,
    each divided by sqrt(λ + floor·λ_max)."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"whitening needs a (rows, dim) matrix of at least 2 embeddings, got {tuple(z.shape)}")
    if not floor > 0:
        raise ValueError(f"the whitening floor must be > 0 (it bounds the gain of unused directions), got {floor}")
    if not torch.isfinite(z).all():
        raise ValueError("the embeddings to fit the whitening on contain NaN or inf")
    x = z.double()
    mean = x.mean(0)
    cov = torch.cov((x - mean).T).reshape(x.shape[1], x.shape[1])
    eigenvalues, vectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0.0), vectors.flip(1)
    if eigenvalues[0] <= 0:
        raise ValueError("the embeddings to fit the whitening on are all equal")
    matrix = vectors / (eigenvalues + floor * eigenvalues[0]).sqrt()
    return mean.float(), matrix.float()


def fold_into_linear(linear: nn.Linear, mean: Tensor, matrix: Tensor) -> None:
    """Make ``linear`` compute on whitened input w = Mᵀ(z − μ) what it computed on z (in place).

    ``A z + b = A M^{-T} w + (b + A μ)``: the weight becomes A M^{-T}, the bias b + A μ."""
    a, b = _weight_and_bias(linear)
    _write(linear, torch.linalg.solve(matrix.double(), a.T).T, b + a @ mean.double())  # A M^{-T} = (M^{-1} Aᵀ)ᵀ


def unfold_from_linear(linear: nn.Linear, mean: Tensor, matrix: Tensor) -> None:
    """The inverse of :func:`fold_into_linear`: ``linear`` computed on w = Mᵀ(z − μ); make it take z.

    ``A Mᵀ(z − μ) + b``: the weight becomes A Mᵀ, the bias b − A Mᵀ μ."""
    a, b = _weight_and_bias(linear)
    raw = a @ matrix.double().T
    _write(linear, raw, b - raw @ mean.double())


def _weight_and_bias(linear: nn.Linear) -> tuple[Tensor, Tensor]:
    if linear.bias is None:  # the mean moves into the bias
        raise ValueError("folding a whitening into a linear layer needs a layer with a bias")
    return linear.weight.detach().double(), linear.bias.detach().double()


def _write(linear: nn.Linear, weight: Tensor, bias: Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight.dtype))
        linear.bias.copy_(bias.to(linear.bias.dtype))  # type: ignore[union-attr]
