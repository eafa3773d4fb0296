"""Full-reference image quality for the upsamplers (issue 7): PSNR and SSIM against the true image.

Images are float tensors in [0, 1] of shape (N, C, H, W) or (C, H, W); both metrics return one value per image.
SSIM follows Wang, Bovik, Sheikh & Simoncelli (2004): an 11×11 Gaussian window with σ = 1.5, K₁ = 0.01,
K₂ = 0.03, L = 1, local statistics over the "valid" part of the image (no padding, as the authors' MATLAB code),
the SSIM map averaged per channel and then over channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) or (C, H, W) images, got shape {tuple(x.shape)}")
    return x.double(), y.double()


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10·log10(L² / MSE), per image; +inf for identical images."""
    x, y = _pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalized 1-D Gaussian of ``size`` taps (the 2-D window is its outer product), float64."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image (mean of the SSIM map over pixels, then over channels)."""
    x, y = _pair(x, y)
    _, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(f"SSIM's {window_size}×{window_size} window needs images at least that big, got {h}×{w}")
    g = gaussian_window(window_size, sigma)
    # Separable Gaussian filtering of every channel independently (grouped convolutions), "valid" region.
    gh = g.view(1, 1, 1, -1).expand(c, 1, 1, window_size)
    gv = g.view(1, 1, -1, 1).expand(c, 1, window_size, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """The PSNR that a given mean squared error corresponds to."""
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
