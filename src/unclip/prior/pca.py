"""PCA of CLIP image embeddings and per-component uniform quantization, for the AR prior (§2.2).

"We reduce the dimensionality of the CLIP image embeddings z_i by applying PCA ... we find that the rank of
the CLIP representation space is drastically reduced when training with SAM ... we are able to preserve nearly
all of the information by retaining only 319 principal components out of the original 1,024. After applying
PCA, we order the principal components by decreasing eigenvalue magnitude, quantize each of the 319 dimensions
into 1,024 discrete buckets" (§2.2). The fitted basis and bucket ranges are buffers, saved with the prior.

Round trip bound: with orthonormal components, ``|z - decode(encode(z))| <= |PCA residual of z| +
sqrt(sum_k (width_k / 2)^2)`` for any z whose projections lie inside the fitted ranges (values outside are
clamped to the end buckets).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unclip.prior.normalize import is_fitted


def pca_components(
    z: Tensor, variance: float = 0.99, max_components: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean (D,), the fewest components (K, D) holding at least ``variance`` of the total, and their ratios (K,).

    Computed in float64 from the SVD of the centred data; components are ordered by decreasing variance and
    their signs fixed (largest-magnitude entry positive) so a refit on the same data gives the same basis.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"PCA needs embeddings of shape (N >= 2, D), got {tuple(z.shape)}")
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance to keep must lie in (0, 1], got {variance!r}")
    x = z.double()
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    var = s**2
    total = var.sum()
    if not total > 0:
        raise ValueError("embeddings have zero variance; PCA is undefined")
    ratio = var / total
    k = int((torch.cumsum(ratio, 0) < variance - 1e-12).sum()) + 1
    k = min(k, ratio.numel(), max_components or ratio.numel())
    comps = vh[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    return mean.float(), (comps * signs).float(), ratio[:k].float()


class PCAQuantizer(nn.Module):
    """z (B, D) <-> bucket codes (B, K) in [0, buckets); buffers hold the fitted basis and ranges."""

    def __init__(self, dim: int, components: int, buckets: int = 1024) -> None:
        super().__init__()
        if components < 1 or components > dim:
            raise ValueError(f"PCA components must lie in [1, {dim}] (the embedding dim), got {components}")
        if buckets < 2:
            raise ValueError(f"need at least 2 buckets per component, got {buckets}")
        self.dim, self.components, self.buckets = dim, components, buckets
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("basis", torch.zeros(components, dim))
        self.register_buffer("explained", torch.zeros(components))  # variance ratio of each component
        self.register_buffer("lo", torch.zeros(components))
        self.register_buffer("hi", torch.ones(components))
        self.register_buffer("fitted", torch.tensor(0, dtype=torch.int64))

    @torch.no_grad()
    def fit(self, z: Tensor) -> PCAQuantizer:
        """Fit on training embeddings with exactly ``self.components`` components; bucket ranges span the data."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"embeddings to fit must have shape (N, {self.dim}), got {tuple(z.shape)}")
        mean, basis, ratio = pca_components(z, 1.0, self.components)
        if basis.shape[0] < self.components:
            raise ValueError(f"{z.shape[0]} embeddings give only {basis.shape[0]} components, need {self.components}")
        self.mean.copy_(mean)
        self.basis.copy_(basis)
        self.explained.copy_(ratio)
        y = (z.double() - mean.double()) @ basis.double().T
        lo, hi = y.min(0).values, y.max(0).values
        pad = 1e-6 * (hi - lo).clamp_min(1e-6)  # so the maximum lands inside the last bucket
        self.lo.copy_((lo - pad).float())
        self.hi.copy_((hi + pad).float())
        self.fitted.fill_(1)
        return self

    def check_fitted(self) -> None:
        if not is_fitted(self):
            raise ValueError("the PCA quantizer is not fitted: fit it on training embeddings or load a checkpoint")

    @property
    def width(self) -> Tensor:
        return (self.hi - self.lo) / self.buckets

    def project(self, z: Tensor) -> Tensor:
        return (z - self.mean) @ self.basis.T

    def unproject(self, y: Tensor) -> Tensor:
        return y @ self.basis + self.mean

    def encode(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"embeddings to quantize must have shape (B, {self.dim}), got {tuple(z.shape)}")
        codes = torch.floor((self.project(z) - self.lo) / self.width)
        return codes.clamp(0, self.buckets - 1).long()

    def decode(self, codes: Tensor) -> Tensor:
        """Bucket centres back to embeddings: the reconstruction lies in the PCA subspace."""
        if codes.ndim != 2 or codes.shape[1] != self.components:
            raise ValueError(f"codes must have shape (B, {self.components}), got {tuple(codes.shape)}")
        return self.unproject(self.lo + (codes.to(self.lo.dtype) + 0.5) * self.width)
