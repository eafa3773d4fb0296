import math

import pytest
import torch

from unclip.data.degradations import blur_corrupt, bsr_degrade, corrupt, downsample, gaussian_kernel2d, jpeg
from unclip.diffusion import generators_from_seeds


def images(b=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth random images plus an edge: something blur and JPEG visibly change.
    x = torch.nn.functional.interpolate(torch.rand(b, 3, 8, 8, generator=g) * 2 - 1, size=size, mode="bilinear")
    x[..., :, size // 2 :] *= -1
    return x


def test_paper_blur_kernel():
    k = gaussian_kernel2d(0.6, 0.6, 0.0, 3)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    # Centre to edge-neighbour ratio is exp(1 / (2 σ²)) for σ = 0.6.
    assert (k[1, 1] / k[1, 0]).item() == pytest.approx(math.exp(1 / (2 * 0.36)), rel=1e-5)
    x = images()
    flat = torch.full_like(x, 0.3)
    assert torch.allclose(blur_corrupt(flat), flat, atol=1e-6)  # blur keeps constants
    assert (blur_corrupt(x) - x).abs().max().item() > 0.05


def test_anisotropic_kernel_rotates():
    k = gaussian_kernel2d(3.0, 0.5, 0.0, 9)
    assert torch.allclose(gaussian_kernel2d(3.0, 0.5, math.pi / 2, 9), k.T, atol=1e-6)


def test_downsample_factor_and_errors():
    assert downsample(images(size=32), 4).shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="not divisible by the factor 3"):
        downsample(images(size=32), 3)


def test_bsr_is_deterministic_per_sample_seed_and_degrades():
    x = images(size=64)
    a = bsr_degrade(x, 4, generators_from_seeds([1, 2, 3]))
    b = bsr_degrade(x, 4, generators_from_seeds([1, 2, 3]))
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    # Sample 1 depends on its own seed only, not on the rest of the batch.
    alone = bsr_degrade(x[1:2], 4, generators_from_seeds([2]))
    assert torch.equal(alone[0], a[1])
    c = bsr_degrade(x, 4, generators_from_seeds([4, 5, 6]))
    assert not torch.equal(a, c)
    clean = downsample(x, 4)
    assert (a - clean).abs().mean().item() > 0.01 and a.abs().max().item() <= 1.0


def test_jpeg_round_trip_is_close_but_lossy():
    x = images(b=1, size=32)[0]
    y = jpeg(x, 50)
    assert y.shape == x.shape
    err = (y - x).abs().mean().item()
    assert 0.0 < err < 0.1


def test_corrupt_dispatch_and_errors():
    x = images(size=32)
    assert torch.allclose(corrupt(x, 4, "none"), downsample(x, 4))
    assert torch.allclose(corrupt(x, 4, "blur"), blur_corrupt(downsample(x, 4)))
    with pytest.raises(ValueError, match="one generator per sample"):
        corrupt(x, 4, "bsr")
    with pytest.raises(ValueError, match="'sharpen'"):
        corrupt(x, 4, "sharpen")
