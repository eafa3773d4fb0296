"""AR prior (§2.2): PCA keeping >= 99% variance, quantization round trip, top-half dot token, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from prior_data import synthetic_pairs

from unclip.prior import (
    AR_PRIOR_PRESETS,
    ARPrior,
    ARPriorConfig,
    PCAQuantizer,
    ar_prior_loss,
    pca_components,
    sample_ar_prior,
)
from unclip.prior.ar_prior import draw_dot_bins


def low_rank_data(n: int = 2000, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """Embeddings with a steeply decaying spectrum, like CLIP's (§2.2: 319 of 1024 components hold 99%)."""
    scales = 0.7 ** torch.arange(dim, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(77), dtype=torch.float64))[0]
    g = torch.Generator().manual_seed(seed)
    return ((torch.randn(n, dim, generator=g, dtype=torch.float64) * scales) @ basis.T + 0.3).float()


def test_pca_keeps_at_least_99_percent_with_the_fewest_components():
    z = low_rank_data()
    mean, basis, ratio = pca_components(z, 0.99)
    k = basis.shape[0]
    assert 1 < k < 32
    assert ratio.sum() >= 0.99
    _, _, all_ratios = pca_components(z, 1.0)
    assert all_ratios[: k - 1].sum() < 0.99  # one fewer would not do
    torch.testing.assert_close(basis @ basis.T, torch.eye(k), atol=1e-5, rtol=0)
    # Captured variance measured directly on the data, not from the SVD's own numbers.
    y = (z - mean) @ basis.T
    assert y.var(0).sum() / (z - mean).var(0).sum() >= 0.99


@pytest.mark.parametrize("buckets", [16, 1024])
def test_quantization_round_trip_within_its_bound(buckets):
    z = low_rank_data()
    _, basis, _ = pca_components(z, 0.99)
    k = basis.shape[0]
    q = PCAQuantizer(32, k, buckets).fit(z)
    held = low_rank_data(500, seed=1)
    codes = q.encode(held)
    assert codes.dtype == torch.long and codes.min() >= 0 and codes.max() < buckets
    back = q.decode(codes)
    y = q.project(held)
    inside = ((y >= q.lo) & (y <= q.hi)).all(1)
    residual = (held - q.unproject(y)).norm(dim=1)
    bound = residual + (q.width / 2).norm() + 1e-5
    err = (held - back).norm(dim=1)
    assert inside.float().mean() > 0.8  # held-out points rarely leave the fitted ranges
    assert (err[inside] <= bound[inside]).all()
    # Per component, a value inside the range is off by at most half a bucket.
    assert ((q.project(back) - y).abs()[inside] <= q.width / 2 + 1e-5).all()
    if buckets == 1024:  # the paper's setting: quantization adds next to nothing to the PCA residual
        quant = (q.unproject(y) - back).norm(dim=1)
        assert (quant[inside] / held[inside].norm(dim=1)).max() < 0.01


def test_dot_token_comes_from_the_top_half():
    gens = [torch.Generator().manual_seed(i) for i in range(2000)]
    bins = draw_dot_bins(1024, 0.5, gens)
    assert bins.min() >= 512 and bins.max() <= 1023
    assert abs(bins.float().mean().item() - 767.5) < 10  # uniform over the top half
    assert draw_dot_bins(10, 0.9, gens[:50]).eq(9).all()
    # Bins are quantiles of the training z_i . z_t, so the top half are exactly the above-median dot products.
    z_i, z_t, tok, mask = synthetic_pairs(400)
    cfg = ARPriorConfig(embed_dim=16, text_width=24, text_len=6, components=16, buckets=8, dot_bins=8,
                        width=32, depth=1, heads=2)  # fmt: skip
    m = ARPrior.from_data(cfg, z_i, z_t)
    dots = (z_i * z_t).sum(1)
    top = m.dot_bin(z_i, z_t) >= 4
    assert abs(top.float().mean().item() - 0.5) < 0.01
    assert dots[top].min() >= dots[~top].max()
    out = sample_ar_prior(m, z_t[:5], tok[:5], mask[:5], generator=torch.Generator().manual_seed(0))
    assert (out.dot_bin >= 4).all()


def shifted_pairs(n: int, seed: int, dim: int = 8):
    """z_i = normalize(alpha z_t + (1 - alpha) R z_t): alpha ~ U(0, 1) per pair is only visible through z_i . z_t."""
    z_i, z_t, tok, mask = synthetic_pairs(n, dim=dim, seed=seed)  # z_i here is R z_t (+ small noise)
    g = torch.Generator().manual_seed(seed + 100)
    alpha = torch.rand(n, 1, generator=g)
    return F.normalize(alpha * z_t + (1 - alpha) * z_i, dim=1), z_t, tok, mask


def test_ar_prior_trains_and_its_dot_token_steers_samples():
    torch.manual_seed(0)
    z_i, z_t, tok, mask = shifted_pairs(2048, seed=1)
    cfg = ARPriorConfig(embed_dim=8, text_width=24, text_len=6, components=8, variance=0.99, buckets=16,
                        dot_bins=8, width=64, depth=2, heads=4)  # fmt: skip
    m = ARPrior.from_data(cfg, z_i, z_t)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(300):
        idx = torch.randint(0, 2048, (64,), generator=g)
        ce, _ = ar_prior_loss(m, z_i[idx], z_t[idx], tok[idx], mask[idx])
        loss = ce.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            first = loss.item()
    assert loss.item() < 0.75 * first, (first, loss.item())
    m.eval()
    _, hz_t, htok, hmask = shifted_pairs(48, seed=99)
    dots = {}
    for b in (0, cfg.dot_bins - 1):
        out = sample_ar_prior(m, hz_t, htok, hmask, dot_bin=torch.full((48,), b), top_k=8,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
        dots[b] = (out.z_i * hz_t).sum(1).mean().item()
    print(f"AR prior: mean z_i.z_t with the lowest dot token {dots[0]:.3f}, highest {dots[cfg.dot_bins - 1]:.3f}")
    assert dots[cfg.dot_bins - 1] > dots[0] + 0.15


def test_bad_inputs_and_presets():
    z_i, z_t, tok, mask = synthetic_pairs(64)
    cfg = ARPriorConfig(embed_dim=16, text_width=24, text_len=6, components=16, buckets=8, dot_bins=4,
                        width=32, depth=1, heads=2)  # fmt: skip
    m = ARPrior.from_data(cfg, z_i, z_t)
    with pytest.raises(ValueError, match="temperature"):
        sample_ar_prior(m, z_t[:2], tok[:2], mask[:2], temperature=0)
    with pytest.raises(ValueError, match=r"top_k must lie in \[1, 8\]"):
        sample_ar_prior(m, z_t[:2], tok[:2], mask[:2], top_k=9)
    with pytest.raises(ValueError, match="dot_bin must hold 2 bins"):
        sample_ar_prior(m, z_t[:2], tok[:2], mask[:2], dot_bin=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"z_t must have shape \(B, 16\)"):
        sample_ar_prior(m, z_t[:2, :8], tok[:2], mask[:2])
    with pytest.raises(ValueError, match="not fitted"):
        sample_ar_prior(ARPrior(cfg), z_t[:2], tok[:2], mask[:2])
    with pytest.raises(ValueError, match="components 40 exceed embed_dim 16"):
        ARPriorConfig(embed_dim=16, components=40)
    for name, preset in AR_PRIOR_PRESETS.items():
        assert preset.variance == 0.99 and preset.dot_percentile == 0.5, name
    assert AR_PRIOR_PRESETS["base"].buckets == 1024
    ARPrior(AR_PRIOR_PRESETS["tiny"])
