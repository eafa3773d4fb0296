"""Fréchet distance between Gaussians fitted to feature sets: the maths of FID (Heusel et al., 2017).

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^½

Everything runs in float64. The cross term tr (Σ₁Σ₂)^½ has three routes, all exact in exact arithmetic:

- ``"eigh"`` (default for statistics): tr (Σ₁Σ₂)^½ = tr (Σ₁^½ Σ₂ Σ₁^½)^½, and Σ₁^½ Σ₂ Σ₁^½ is symmetric positive
  semi-definite, so two symmetric eigendecompositions give it. It stays exact for singular covariances (fewer
  images than feature dimensions), where round-off only makes tiny negative eigenvalues, clipped to 0. On 2,048
  dimensions it takes ~3 s on 2 cores, against 20–60 s for ``scipy.linalg.sqrtm``.
- ``"sqrtm"``: the reference computation of pytorch-fid and the TTUR code, ``scipy.linalg.sqrtm(Σ₁Σ₂)``, with its
  usual guards: when the result is not finite (near-singular product) retry with ``eps·I`` added to both
  covariances, with a warning; drop an imaginary part of round-off size, and refuse a large one.
- low rank, from features (:func:`frechet_distance_from_features`): with centred feature matrices A₁ (n₁×d) and
  A₂ (n₂×d), Σᵢ = AᵢᵀAᵢ/(nᵢ−1) and the eigenvalues of Σ₁Σ₂ are the squared singular values of
  A₁A₂ᵀ/√((n₁−1)(n₂−1)), so the cross term is that matrix's nuclear norm: milliseconds when a set is smaller than d.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("eigh", "sqrtm")


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance (unbiased, ddof 1) of a feature set, float64, with the sample count."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor) -> GaussianStats:
        f = _as_features(features, "features")
        return cls(mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1]), n=f.shape[0])


def _as_features(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    f = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if f.ndim != 2:
        raise ValueError(f"{name}: expected a (N, D) feature matrix, got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"{name}: a covariance needs at least 2 samples, got {f.shape[0]}")
    f = f.astype(np.float64)
    if not np.isfinite(f).all():
        raise ValueError(f"{name}: features contain NaN or infinity")
    return f


def _check_stats(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    d = mu.shape[0]
    if mu.ndim != 1 or sigma.shape != (d, d):
        raise ValueError(
            f"{name}: expected mu of shape (D,) and sigma of shape (D, D), got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name}: statistics contain NaN or infinity")
    if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(sigma).max()))):
        raise ValueError(f"{name}: sigma is not symmetric, so it is not a covariance")
    return mu, sigma


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # torch's float64 LAPACK: eigh of 2,048² in ~1.5 s on 2 cores, several times faster than scipy's build here.
    s1 = torch.from_numpy(sigma1)
    s2 = torch.from_numpy(sigma2)
    root1 = _psd_sqrt(s1)
    m = root1 @ s2 @ root1
    lam = torch.linalg.eigvalsh((m + m.T) / 2)
    scale = max(float(lam.abs().max()), 1e-300)
    if float(lam.min()) < -1e-6 * scale:
        raise ValueError(
            f"Σ₁^½ Σ₂ Σ₁^½ has a negative eigenvalue {float(lam.min()):.3g} (largest {scale:.3g}): "
            "a covariance is not positive semi-definite"
        )
    return float(lam.clamp_min(0).sqrt().sum())


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    import scipy.linalg

    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: the product of covariances is singular; adding {eps:g}·I to both covariances",
            RuntimeWarning,
            stacklevel=3,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Round-off makes small imaginary parts; a large one means the inputs are not covariances.
        imag = np.abs(np.diagonal(covmean).imag).max()
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm(Σ₁Σ₂) has an imaginary component {imag:.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, method: str = "eigh", eps: float = 1e-6
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``method`` picks the route to tr (Σ₁Σ₂)^½ (see the module docstring); ``eps`` is the diagonal offset that
    the ``"sqrtm"`` route adds, with a warning, when the product of covariances is singular.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    mu1, sigma1 = _check_stats(mu1, sigma1, "first set")
    mu2, sigma2 = _check_stats(mu2, sigma2, "second set")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape[0]} and {mu2.shape[0]}")
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    diff = mu1 - mu2
    d2 = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    # A distance is never negative; round-off can leave ~-1e-10 for identical inputs.
    return max(d2, 0.0)


def frechet_distance_from_features(
    features1: np.ndarray | torch.Tensor, features2: np.ndarray | torch.Tensor, *, method: str = "auto"
) -> float:
    """Squared Fréchet distance between Gaussians fitted to two (N, D) feature sets.

    ``method="auto"`` takes the exact low-rank route when either set has no more samples than dimensions (the
    covariance is then singular anyway, and the route costs milliseconds) and ``"eigh"`` on the statistics
    otherwise; ``"lowrank"``, ``"eigh"`` and ``"sqrtm"`` force one route.
    """
    f1 = _as_features(features1, "first set")
    f2 = _as_features(features2, "second set")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} and {f2.shape[1]}")
    if method == "auto":
        method = "lowrank" if min(f1.shape[0], f2.shape[0]) <= f1.shape[1] else "eigh"
    if method != "lowrank":
        s1, s2 = GaussianStats.from_features(f1), GaussianStats.from_features(f2)
        return frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma, method=method)
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1 = torch.from_numpy(f1 - mu1)
    a2 = torch.from_numpy(f2 - mu2)
    n1, n2 = f1.shape[0], f2.shape[0]
    tr1 = float((a1 * a1).sum()) / (n1 - 1)
    tr2 = float((a2 * a2).sum()) / (n2 - 1)
    tr_covmean = float(torch.linalg.svdvals(a1 @ a2.T).sum()) / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return max(float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean), 0.0)
