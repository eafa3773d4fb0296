"""A Gaussian data distribution N(mu, Sigma) and its closed-form optimal denoiser (STYLE.md practice 13).

With x_t = a x0 + s eps, x_t ~ N(a mu, a² Sigma + s² I), and the MMSE denoiser is
E[x0 | x_t] = mu + a Sigma (a² Sigma + s² I)^-1 (x_t - a mu). A sampler driven by it must reproduce mu and Sigma.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unclip.diffusion import Denoised, NoiseSchedule


def correlated_gaussian(dim: int = 8, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """A mean and a full covariance with strong correlations and eigenvalues spread over ~two decades."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(dim, generator=g, dtype=dtype) * 0.5
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=dtype))
    eig = torch.logspace(-1.5, 0.3, dim, dtype=dtype)
    return mu, q @ torch.diag(eig) @ q.T


class GaussianDenoiser:
    """The exact denoiser of N(mu, Sigma) data on flattened samples, for any sample shape of numel == dim."""

    def __init__(self, mu: Tensor, sigma: Tensor, schedule: NoiseSchedule) -> None:
        self.mu, self.sigma = mu, sigma
        self.alpha_bar = schedule.alpha_bar
        self.calls = 0
        self._gain: dict[int, Tensor] = {}

    def gain(self, t: int) -> Tensor:
        """a Sigma (a² Sigma + s² I)^-1 at timestep t, cached: samplers call with one t for the whole batch."""
        if t not in self._gain:
            ab = self.alpha_bar[t]
            eye = torch.eye(self.mu.numel(), dtype=torch.float64)
            cov_t = ab * self.sigma + (1 - ab) * eye
            self._gain[t] = ab.sqrt() * self.sigma @ torch.linalg.inv(cov_t)
        return self._gain[t]

    def __call__(self, x: Tensor, t: Tensor) -> Denoised:
        self.calls += 1
        shape = x.shape
        flat = x.reshape(shape[0], -1).to(torch.float64)
        ab = self.alpha_bar[t]
        a, s = ab.sqrt(), (1 - ab).sqrt()
        resid = flat - a[:, None] * self.mu
        if bool((t == t[0]).all()):  # samplers use one t for the whole batch
            x0 = self.mu + resid @ self.gain(int(t[0])).T
        else:
            gain = torch.stack([self.gain(int(ti)) for ti in t])  # (B, D, D)
            x0 = self.mu + (gain @ resid[:, :, None])[:, :, 0]
        eps = (flat - a[:, None] * x0) / s[:, None]
        return Denoised(x0.reshape(shape).to(x.dtype), eps.reshape(shape).to(x.dtype))


def exact_samples(mu: Tensor, sigma: Tensor, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return mu + torch.randn(n, mu.numel(), generator=g, dtype=mu.dtype) @ torch.linalg.cholesky(sigma).T


def mean_cov_errors(x: Tensor, mu: Tensor, sigma: Tensor) -> tuple[float, float]:
    """(max abs error of the mean, relative Frobenius error of the covariance) of samples x against the truth."""
    mean_err = (x.mean(0) - mu).abs().max().item()
    cov_err = ((torch.cov(x.T) - sigma).norm() / sigma.norm()).item()
    return mean_err, cov_err
