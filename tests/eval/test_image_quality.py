"""PSNR and SSIM: known values, analytic cases, and SSIM against an independent direct 2-D implementation."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from unclip.eval import psnr, ssim
from unclip.eval.image_quality import gaussian_window, psnr_from_mse


def _images(seed=0, shape=(2, 3, 32, 40)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_psnr_known_values():
    x = torch.full((1, 3, 16, 16), 0.5)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0, abs=1e-5)  # MSE 0.01 → 20 dB
    assert psnr(x, x + 0.01).item() == pytest.approx(40.0, abs=1e-4)
    assert psnr(x * 255, x * 255 + 2.55, data_range=255.0).item() == pytest.approx(40.0, abs=1e-4)
    assert math.isinf(psnr(x, x).item()) and psnr_from_mse(0.01) == pytest.approx(20.0)


def test_ssim_of_an_image_with_itself_is_one_and_drops_with_noise():
    x = _images()
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisy = [(x + s * torch.randn_like(x)).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    values = [ssim(x, y).mean().item() for y in noisy]
    assert values[0] < 1 and values == sorted(values, reverse=True), values
    torch.testing.assert_close(ssim(x, noisy[1]), ssim(noisy[1], x))  # symmetric


def test_ssim_of_constant_images_is_the_luminance_term():
    # No variance anywhere: SSIM = (2ab + C1) / (a² + b² + C1) exactly.
    a, b, c1 = 0.2, 0.7, 0.01**2
    x, y = torch.full((1, 3, 20, 20), a, dtype=torch.float64), torch.full((1, 3, 20, 20), b, dtype=torch.float64)
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def test_ssim_matches_a_direct_two_dimensional_window():
    x, y = _images(1, (1, 3, 24, 30)), _images(2, (1, 3, 24, 30))
    y = 0.6 * x + 0.4 * y  # correlated, so every term matters
    g = gaussian_window().numpy()
    w = np.outer(g, g)
    c1, c2 = 0.01**2, 0.03**2
    per_channel = []
    for ch in range(3):
        a, b = x[0, ch].numpy(), y[0, ch].numpy()

        def f(t):
            return correlate2d(t, w, mode="valid")

        mu_a, mu_b = f(a), f(b)
        var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
        m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        per_channel.append(m.mean())
    assert ssim(x, y).item() == pytest.approx(float(np.mean(per_channel)), rel=1e-10)


def test_window_and_bad_inputs():
    g = gaussian_window(11, 1.5)
    assert g.sum().item() == pytest.approx(1.0) and g.argmax().item() == 5
    with pytest.raises(ValueError, match="shape"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    assert ssim(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)).shape == (1,)
