"""ILVR against the exact conditional of a Gaussian given its block means (STYLE.md practice 13).

Data x ~ N(mu, Sigma) in 8 correlated dims, seen as (2, 2, 2) images: 2 channels of 2 x 2 pixels. With a low-pass
factor of 2 the measurement is A x, each channel's mean (2 numbers); the exact answer is the Gaussian
conditional, mean mu + Sigma A^T (A Sigma A^T)^-1 (A y - A mu). ILVR holds A x to A y exactly at the end, and,
with RePaint's resampling, its samples' mean approaches the conditional mean (measured: error 0.38 without
resampling, 0.07 with 10 resamplings of 5-step blocks; the samples' own noise in the mean
is about 0.5 / sqrt(4000) = 0.008 per dim).
"""

import pytest
import torch
from gaussian import GaussianDenoiser, correlated_gaussian

from unclip.diffusion import NoiseSchedule
from unclip.diffusion.ilvr import lowpass, sample_ilvr

SCHED = NoiseSchedule.named("cosine")
MU, SIGMA = correlated_gaussian()
N = 4000
# A: the mean of each channel's 4 pixels, on the (2, 2, 2) layout flattened channel-major.
A = torch.block_diag(torch.full((1, 4), 0.25), torch.full((1, 4), 0.25)).double()


def _conditional_mean(y: torch.Tensor) -> torch.Tensor:
    gain = SIGMA @ A.T @ torch.linalg.inv(A @ SIGMA @ A.T)
    return MU + gain @ (A @ y - A @ MU)


def _reference() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return MU + torch.linalg.cholesky(SIGMA) @ torch.randn(8, generator=g, dtype=torch.float64)


def _ilvr(resample: int, jump: int, steps: int = 50) -> torch.Tensor:
    y = _reference()
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(N, 2, 2, 2, generator=g, dtype=torch.float64)
    den = GaussianDenoiser(MU, SIGMA, SCHED)
    out = sample_ilvr(den, x_T, SCHED.grid(steps), reference=y.view(1, 2, 2, 2).expand(N, 2, 2, 2).clone(),
                      factor=2, generator=g, resample=resample, jump=jump)  # fmt: skip
    return out.reshape(N, 8)


def test_lowpass_is_a_linear_projection_onto_block_means():
    v, w = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    p = lowpass(4)
    torch.testing.assert_close(p(p(v)), p(v))
    torch.testing.assert_close(p(2 * v - w), 2 * p(v) - p(w))
    torch.testing.assert_close(p(v)[:, :, :4, :4], v[:, :, :4, :4].mean(dim=(2, 3), keepdim=True).expand(3, 3, 4, 4))
    assert torch.equal(lowpass(1)(v), v)
    with pytest.raises(ValueError, match="divisible"):
        p(torch.zeros(1, 3, 6, 6))
    with pytest.raises(ValueError, match="positive integer"):
        lowpass(0)


def test_linear_lowpass_is_a_smooth_orthogonal_projection_of_the_coarse_rank():
    g = torch.Generator().manual_seed(0)  # unseeded, one draw in many had a box step small enough to fail the end
    v, w = (torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=g) for _ in range(2))
    p = lowpass(4, "linear")
    torch.testing.assert_close(p(p(v)), p(v))
    torch.testing.assert_close((p(v) * w).sum(), (v * p(w)).sum())  # symmetric: orthogonal, not oblique
    flat = torch.eye(256, dtype=torch.float64).view(256, 1, 16, 16)
    assert torch.linalg.matrix_rank(p(flat).view(256, 256)).item() == 16  # (16 / 4)² coarse images per channel
    torch.testing.assert_close(
        p(torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)), torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)
    )

    # No block edges: a box-projected image changes only across block borders (columns 3|4, 7|8, 11|12); in the
    # linear one the mean step across a border is within 2× the mean step inside a block (1.47–1.59 over 200 seeds).
    def border_and_inner(u):
        d = (u[..., 1:] - u[..., :-1]).abs()
        inner = torch.ones(d.shape[-1], dtype=torch.bool)
        inner[3::4] = False
        return d[..., ~inner].mean().item(), d[..., inner].mean().item()

    box_border, box_inner = border_and_inner(lowpass(4)(v))
    assert box_inner < 1e-12 < box_border
    border, inner = border_and_inner(p(v))
    assert border < 2 * inner
    with pytest.raises(ValueError, match="kind must be one of box, linear"):
        lowpass(4, "cubic")


def test_samples_keep_the_reference_block_means_and_vary_the_rest():
    out = _ilvr(resample=1, jump=1)
    y = _reference()
    torch.testing.assert_close(out @ A.T, (A @ y).expand(N, 2), rtol=0, atol=1e-9)
    assert (out - y).abs().mean() > 0.1  # not copies of the reference
    # What A does not fix spreads: the residual's covariance is far from zero.
    assert torch.cov(out.T).diagonal().min() > 0.01


def test_resampling_reaches_the_conditional_mean():
    target = _conditional_mean(_reference())
    plain = (_ilvr(resample=1, jump=1).mean(0) - target).abs().max().item()
    resampled = (_ilvr(resample=10, jump=5).mean(0) - target).abs().max().item()
    assert resampled < 0.08 and resampled < 0.3 * plain, (plain, resampled)


def test_a_factor_of_one_returns_the_reference():
    y = _reference().view(1, 2, 2, 2).expand(5, 2, 2, 2).clone()
    den = GaussianDenoiser(MU, SIGMA, SCHED)
    out = sample_ilvr(den, torch.randn(5, 2, 2, 2, dtype=torch.float64), SCHED.grid(10), reference=y, factor=1)
    torch.testing.assert_close(out, y)


def test_the_held_part_is_the_reference_noised_to_each_steps_level():
    # ILVR's y_t ~ q(y_t | y_0): at every step the state's block means are sqrt(ab) A y plus fresh noise of
    # variance (1 - ab) / 4 (the mean of 4 unit normals), not the clean A y.
    y = _reference()
    g = torch.Generator().manual_seed(2)
    seen = {}
    grid = SCHED.grid(10)
    sample_ilvr(GaussianDenoiser(MU, SIGMA, SCHED), torch.randn(N, 2, 2, 2, generator=g, dtype=torch.float64), grid,
                reference=y.view(1, 2, 2, 2).expand(N, 2, 2, 2).clone(), factor=2, generator=g,
                callback=lambda step: seen.setdefault(step.i, step.x.reshape(N, 8) @ A.T))  # fmt: skip
    for i in (0, 5, 9):
        ab = float(grid.alpha_bar[i])
        means = seen[i]
        torch.testing.assert_close(means.mean(0), ab**0.5 * (A @ y), rtol=0, atol=0.03)
        torch.testing.assert_close(
            means.var(0), torch.full((2,), (1 - ab) / 4, dtype=torch.float64), rtol=0.1, atol=0.003
        )
