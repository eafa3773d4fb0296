"""Diffusion prior (§2.2): causal mask, caption dropout, best-of-N, determinism, training on a synthetic task."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from prior_data import synthetic_pairs

from unclip.prior import (
    DIFFUSION_PRIOR_PRESETS,
    DiffusionPrior,
    DiffusionPriorConfig,
    best_of_n,
    diffusion_prior_loss,
    mean_of_n,
    sample_diffusion_prior,
)
from unclip.prior.diffusion_prior import draw_keep
from unclip.prior.transformer import CausalTransformer, causal_mask

DIM, WIDTH, LEN = 16, 24, 6


def tiny(**kw) -> DiffusionPriorConfig:
    base = dict(embed_dim=DIM, text_width=WIDTH, text_len=LEN, width=64, depth=2, heads=4, sample_steps=16)
    return DiffusionPriorConfig(**{**base, **kw})


def fitted(cfg: DiffusionPriorConfig | None = None, seed: int = 0) -> DiffusionPrior:
    torch.manual_seed(seed)
    m = DiffusionPrior(cfg or tiny())
    m.norm.fit(synthetic_pairs(256)[0])
    return m.eval()


def test_transformer_is_causal():
    torch.manual_seed(0)
    tr = CausalTransformer(32, 2, 4).eval()
    h = torch.randn(2, 9, 32)
    valid = torch.ones(2, 9, dtype=torch.bool)
    base = tr(h, valid)
    for j in (3, 8):
        h2 = h.clone()
        h2[:, j] += torch.randn(2, 32)
        out = tr(h2, valid)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        assert (out[:, j:] - base[:, j:]).abs().max() > 1e-3  # later positions do see it


def test_mask_hides_padding_but_never_empties_a_row():
    valid = torch.tensor([[False, True, False, True]])
    allowed = causal_mask(valid)[0]
    assert allowed.diagonal().all()  # a padded query still attends to itself (no NaN)
    assert not allowed[3, 2] and allowed[3, 1] and not allowed[1, 3]


def test_prior_output_ignores_padded_tokens_and_sees_every_input():
    m = fitted()
    z_i, z_t, tokens, mask = synthetic_pairs(4)
    t = torch.full((4,), 500)
    out = m(z_i, t, z_t=z_t, tokens=tokens, mask=mask)
    tokens2 = tokens.clone()
    tokens2[~mask] = 100.0
    torch.testing.assert_close(m(z_i, t, z_t=z_t, tokens=tokens2, mask=mask), out)
    for changed in (dict(x=z_i + 1), dict(z_t=z_t.flip(0)), dict(t=t - 400)):
        args = {"x": z_i, "t": t, "z_t": z_t, **changed}
        assert (m(args["x"], args["t"], z_t=args["z_t"], tokens=tokens, mask=mask) - out).abs().max() > 1e-4


def test_caption_dropout_rate_and_null_branch():
    keep = draw_keep(20_000, 0.1, [torch.Generator().manual_seed(i) for i in range(20_000)])
    assert abs((~keep).float().mean().item() - 0.1) < 0.01
    m = fitted()
    z_i, z_t, tokens, mask = synthetic_pairs(3)
    t = torch.full((3,), 300)
    off = torch.zeros(3, dtype=torch.bool)
    a = m(z_i, t, z_t=z_t, tokens=tokens, mask=mask, keep=off)
    b = m(z_i, t, z_t=torch.randn_like(z_t), tokens=torch.randn_like(tokens), mask=mask, keep=off)
    torch.testing.assert_close(a, b)  # a dropped caption is replaced whole by the learned null
    on = m(z_i, t, z_t=z_t, tokens=tokens, mask=mask, keep=~off)
    assert (on - a).abs().max() > 1e-4


def test_best_of_n_picks_largest_dot_product():
    g = torch.Generator().manual_seed(0)
    cand, z_t = torch.randn(5, 4, 8, generator=g), torch.randn(5, 8, generator=g)
    z, idx = best_of_n(cand, z_t)
    dots = torch.einsum("bnd,bd->bn", cand, z_t)
    assert torch.equal(idx, dots.argmax(1))
    torch.testing.assert_close(z, cand[torch.arange(5), idx])
    assert ((z * z_t).sum(1)[:, None] >= dots - 1e-6).all()


def test_mean_of_n_estimates_the_mean_direction():
    g = torch.Generator().manual_seed(0)
    cand = torch.randn(3, 5, 8, generator=g) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])[None, :, None]
    z = mean_of_n(cand)
    unit = cand / cand.norm(dim=2, keepdim=True)
    expected_dir = unit.mean(1) / unit.mean(1).norm(dim=1, keepdim=True)
    torch.testing.assert_close(z / z.norm(dim=1, keepdim=True), expected_dir)  # candidates' norms do not weigh
    torch.testing.assert_close(z.norm(dim=1), cand.norm(dim=2).mean(1))
    torch.testing.assert_close(mean_of_n(cand[:, :1]), cand[:, 0])
    # Draws scattered around a direction mu: the mean of N points closer to mu than a single draw, more so with N,
    # as 1 / sqrt(1 + (1 - |E u|^2) / (N |E u|^2)) predicts for unit draws u.
    mu = F.normalize(torch.randn(64, generator=g), dim=0)
    draws = mu + 0.15 * torch.randn(400, 32, 64, generator=g)
    cos = {n: F.cosine_similarity(mean_of_n(draws[:, :n]), mu[None]).mean().item() for n in (1, 4, 32)}
    assert cos[1] < cos[4] < cos[32]
    u = F.normalize(draws, dim=2)
    m2 = u.mean((0, 1)).norm().item() ** 2
    for n in (4, 32):
        assert abs(cos[n] - cos[1] / (m2 + (1 - m2) / n) ** 0.5) < 0.01, (n, cos)


def test_sampling_reranks_and_each_caption_depends_on_its_seed_only():
    m = fitted()
    _, z_t, tokens, mask = synthetic_pairs(3)
    gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    out = sample_diffusion_prior(m, z_t, tokens, mask, best_of=3, steps=8, guidance_scale=2.0, generator=gens)
    dots = torch.einsum("bnd,bd->bn", out.candidates, z_t)
    assert torch.equal(out.chosen, dots.argmax(1))
    torch.testing.assert_close(out.z_i, out.candidates[torch.arange(3), out.chosen])
    single = sample_diffusion_prior(
        m, z_t[1:2], tokens[1:2], mask[1:2], best_of=3, steps=8, guidance_scale=2.0,
        generator=[torch.Generator().manual_seed(8)],
    )  # fmt: skip
    torch.testing.assert_close(single.z_i[0], out.z_i[1], atol=1e-5, rtol=1e-5)
    gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    mean = sample_diffusion_prior(
        m, z_t, tokens, mask, best_of=3, steps=8, guidance_scale=2.0, generator=gens, combine="mean"
    )  # fmt: skip
    torch.testing.assert_close(mean.candidates, out.candidates)  # the same draws, combined otherwise
    torch.testing.assert_close(mean.z_i, mean_of_n(out.candidates))
    assert (mean.chosen == -1).all()
    with pytest.raises(ValueError, match="combine must be one of"):
        sample_diffusion_prior(m, z_t, tokens, mask, combine="median")


def test_best_of_n_ranks_by_dot_product_or_cosine():
    # The longer candidate wins on dot product, the better-aligned one on cosine (Karlo's un-normalized z_i).
    z_t = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[[3.0, 3.0], [1.0, 0.1]]])
    assert best_of_n(candidates, z_t)[1].item() == 0
    assert best_of_n(candidates, z_t, by="cosine")[1].item() == 1
    with pytest.raises(ValueError, match="'dot' or 'cosine'"):
        best_of_n(candidates, z_t, by="l2")
    with pytest.raises(ValueError, match="rank_by"):
        tiny(rank_by="l2")


def test_sample_clamp_bounds_every_draw_in_normalized_units():
    # Karlo's prior clips its guided x0 estimate to ±5 at each step; the last step returns that estimate itself.
    _, z_t, tokens, mask = synthetic_pairs(4)
    free = fitted()
    kwargs = dict(best_of=2, steps=6, sampler="ddpm", guidance_scale=3.0)
    loose = sample_diffusion_prior(free, z_t, tokens, mask, generator=torch.Generator().manual_seed(0), **kwargs)
    reach = free.norm.normalize(loose.candidates).abs().max().item()
    bounded = fitted(tiny(sample_clamp=reach / 4))
    out = sample_diffusion_prior(bounded, z_t, tokens, mask, generator=torch.Generator().manual_seed(0), **kwargs)
    assert bounded.norm.normalize(out.candidates).abs().max().item() <= reach / 4 + 1e-5
    for bad in (0.0, -1.0, True, "5"):
        with pytest.raises(ValueError, match="sample_clamp"):
            tiny(sample_clamp=bad)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m", "mmse"])
def test_any_core_sampler_runs(sampler):
    m = fitted()
    _, z_t, tokens, mask = synthetic_pairs(2)
    out = sample_diffusion_prior(m, z_t, tokens, mask, steps=4, sampler=sampler, generator=torch.Generator())
    assert out.z_i.shape == (2, DIM) and torch.isfinite(out.z_i).all()


def _trained_prior(pairs, steps: int, batch: int) -> tuple[DiffusionPrior, float, float]:
    """A tiny prior (caption dropout 0.1) trained with AdamW on (z_i, z_t, tokens, mask); (model in eval mode, first
    loss, last loss)."""
    torch.manual_seed(0)
    m = DiffusionPrior(tiny(cond_drop=0.1))
    z_i, z_t, tokens, mask = pairs
    m.norm.fit(z_i)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(z_i), (batch,), generator=g)
        loss = diffusion_prior_loss(m, z_i[idx], z_t[idx], tokens[idx], mask[idx]).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return m.eval(), losses[0], losses[-1]


def test_x0_prior_learns_a_synthetic_caption_to_image_map():
    """z_i = rotation(z_t) + noise: the sampled z_i must be far closer to the truth than z_t itself is."""
    m, first, last = _trained_prior(synthetic_pairs(2048, seed=1), steps=200, batch=64)
    assert last < 0.5 * first
    hz_i, hz_t, htok, hmask = synthetic_pairs(64, seed=99)
    out = sample_diffusion_prior(m, hz_t, htok, hmask, steps=16, generator=torch.Generator().manual_seed(0))
    cos = F.cosine_similarity(out.z_i, hz_i).mean().item()
    baseline = F.cosine_similarity(hz_t, hz_i).mean().item()
    print(f"held-out cosine {cos:.3f}, z_t baseline {baseline:.3f}")
    assert cos > 0.8 and cos > baseline + 0.5, (cos, baseline)


def test_mmse_point_estimate_is_closer_to_the_truth_than_draws():
    """z_i = normalize(A z_t + 0.25 noise): a caption leaves z_i free around the direction of A z_t, as a Shapes-world
    caption leaves positions free. The prior's one-call estimate at t = T (sampler "mmse") must land near that
    direction, the best any prediction can do, and beat its own draws by far (docs/prior.md, "Point estimates")."""
    m, _, _ = _trained_prior(synthetic_pairs(4096, seed=1, noise=0.25), steps=400, batch=128)
    hz_i, hz_t, htok, hmask = synthetic_pairs(256, seed=99, noise=0.25)
    ideal = synthetic_pairs(256, seed=99, noise=0.0)[0]  # normalize(A z_t): the mean direction of p(z_i | caption)

    def cosine(sampler: str, steps: int) -> float:
        out = sample_diffusion_prior(m, hz_t, htok, hmask, sampler=sampler, steps=steps, best_of=1,
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
        return F.cosine_similarity(out.z_i, hz_i).mean().item()

    best = F.cosine_similarity(ideal, hz_i).mean().item()
    point, draw = cosine("mmse", 16), cosine("ddim", 16)
    print(f"cosine to the truth: ideal {best:.3f}, mmse {point:.3f}, draws {draw:.3f}")
    assert point > best - 0.05 and point > draw + 0.1, (best, point, draw)


def test_bad_inputs_name_the_value():
    m = fitted()
    _, z_t, tokens, mask = synthetic_pairs(2)
    with pytest.raises(ValueError, match=r"z_t must have shape \(B, 16\).*\(2, 5\)"):
        sample_diffusion_prior(m, z_t[:, :5], tokens, mask)
    with pytest.raises(ValueError, match="batch 1 but z_t has batch 2"):
        sample_diffusion_prior(m, z_t, tokens[:1], mask[:1])
    with pytest.raises(ValueError, match="text_width"):
        sample_diffusion_prior(m, z_t, tokens[..., :3], mask)
    with pytest.raises(ValueError, match="bool"):
        sample_diffusion_prior(m, z_t, tokens, mask.float())
    with pytest.raises(ValueError, match="text_len"):
        sample_diffusion_prior(m, z_t, torch.randn(2, LEN + 1, WIDTH), torch.ones(2, LEN + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="best_of"):
        sample_diffusion_prior(m, z_t, tokens, mask, best_of=0)
    with pytest.raises(ValueError, match="no statistics"):
        sample_diffusion_prior(DiffusionPrior(tiny()), z_t, tokens, mask)
    with pytest.raises(ValueError, match="width 30 must be divisible by heads 4"):
        tiny(width=30)
    with pytest.raises(ValueError, match="sample_steps"):
        tiny(sample_steps=2000)


def test_presets_are_valid_and_the_small_ones_build():
    for name, cfg in DIFFUSION_PRIOR_PRESETS.items():
        assert dataclasses.replace(cfg) == cfg, name
        assert cfg.cond_drop == 0.1 and cfg.sample_steps == 64 and cfg.best_of == 2 and cfg.train_steps == 1000
    for name in ("tiny", "small"):
        DiffusionPrior(DIFFUSION_PRIOR_PRESETS[name])


def test_the_fitted_check_is_read_once_and_forgotten_when_a_state_dict_loads():
    # The training loss checks the normalization every step; after the first read it must not read the device
    # again, yet loading an unfitted state must still be refused.
    from unclip.prior.normalize import EmbeddingNorm

    norm = EmbeddingNorm(4).fit(torch.randn(16, 4))
    unfitted = EmbeddingNorm(4).state_dict()
    norm.check_fitted()
    reads = []
    original = torch.Tensor.__int__
    torch.Tensor.__int__ = lambda self: reads.append(1) or original(self)  # type: ignore[method-assign]
    try:
        norm.check_fitted()
        assert reads == []
        norm.load_state_dict(unfitted)
        with pytest.raises(ValueError, match="no statistics"):
            norm.check_fitted()
        assert reads == [1]
    finally:
        torch.Tensor.__int__ = original  # type: ignore[method-assign]
