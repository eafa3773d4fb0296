"""Incremental decoding of the AR prior with a key/value cache gives the uncached logits and the same samples."""

from __future__ import annotations

import pytest
import torch
from prior_data import synthetic_pairs

from unclip.prior import ARPrior, ARPriorConfig, DiffusionPrior, diffusion_prior_config, sample_ar_prior
from unclip.prior.transformer import CausalTransformer, causal_mask

CFG = ARPriorConfig(embed_dim=16, text_width=24, text_len=6, components=10, buckets=32, dot_bins=4,
                    width=32, depth=2, heads=4)  # fmt: skip


def random_prior(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[ARPrior, tuple]:
    """A fitted prior with random weights (position embeddings scaled up so that positions matter)."""
    torch.manual_seed(seed)
    z_i, z_t, tokens, mask = synthetic_pairs(200)
    prior = ARPrior(CFG).fit_statistics(z_i, z_t)
    with torch.no_grad():
        prior.pos.mul_(25.0)
    prior = prior.to(dtype).eval()
    return prior, (z_t[:5].to(dtype), tokens[:5].to(dtype), mask[:5])


def test_causal_mask_rows_from_start_are_the_last_rows_of_the_full_mask():
    valid = torch.tensor([[True, False, True, True, True], [False, True, True, True, True]])
    full = causal_mask(valid)
    assert full.shape == (2, 5, 5)
    for start in range(5):
        assert torch.equal(causal_mask(valid, start), full[:, start:])
    # A padded key is hidden from every later query but visible to itself (no empty softmax row).
    assert not full[0, 2:, 1].any() and full[0, 1, 1]


def test_transformer_chunks_through_the_cache_match_one_pass():
    torch.manual_seed(1)
    net = CausalTransformer(32, 3, 4).double().eval()
    h = torch.randn(3, 9, 32, dtype=torch.float64)
    valid = torch.rand(3, 9) > 0.3
    full = net(h, valid)
    cache = net.new_cache(3, 9, dtype=torch.float64, device=h.device)
    parts = [net(h[:, a:b], valid[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9))]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-12, rtol=0)
    assert cache.length == 9
    with pytest.raises(ValueError, match="holds 9 positions"):
        net(h[:, :1], valid[:, :1], cache)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_cached_logits_equal_uncached_logits_at_every_step(dtype, atol):
    prior, (z_t, tokens, mask) = random_prior(dtype)
    dot_bin = torch.tensor([0, 1, 2, 3, 3])
    codes = torch.randint(0, CFG.buckets, (5, CFG.components), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, cache = prior.start_decoding(z_t=z_t, tokens=tokens, mask=mask, dot_bin=dot_bin)
        for n in range(CFG.components):
            ref = prior(codes[:, :n], z_t=z_t, tokens=tokens, mask=mask, dot_bin=dot_bin)
            assert ref.shape == (5, n + 1, CFG.buckets)
            torch.testing.assert_close(logits, ref[:, -1], atol=atol, rtol=0)
            if n + 1 < CFG.components:
                logits = prior.decode_step(codes[:, n], cache)
        with pytest.raises(ValueError, match="a step may add code"):
            prior.decode_step(codes[:, -1], cache)


def test_the_cache_does_not_see_the_future_or_the_padding():
    """Logits of code n+1 change with code n (so the test can fail) but not with padded caption states."""
    prior, (z_t, tokens, mask) = random_prior(torch.float64)
    dot_bin = torch.zeros(5, dtype=torch.long)
    with torch.no_grad():
        _, cache_a = prior.start_decoding(z_t=z_t, tokens=tokens, mask=mask, dot_bin=dot_bin)
        _, cache_b = prior.start_decoding(z_t=z_t, tokens=tokens + 5.0 * ~mask[..., None], mask=mask, dot_bin=dot_bin)
        a = prior.decode_step(torch.full((5,), 3), cache_a)
        b = prior.decode_step(torch.full((5,), 3), cache_b)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        _, cache_c = prior.start_decoding(z_t=z_t, tokens=tokens, mask=mask, dot_bin=dot_bin)
        c = prior.decode_step(torch.full((5,), 7), cache_c)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("top_k", [None, 5])
def test_cached_and_uncached_sampling_draw_the_same_codes(dtype, top_k):
    prior, (z_t, tokens, mask) = random_prior(dtype)

    def draw(use_cache: bool):
        gens = [torch.Generator().manual_seed(10 + i) for i in range(5)]
        return sample_ar_prior(prior, z_t, tokens, mask, top_k=top_k, temperature=1.5, generator=gens,
                               use_cache=use_cache)  # fmt: skip

    cached, plain = draw(True), draw(False)
    assert torch.equal(cached.codes, plain.codes) and torch.equal(cached.dot_bin, plain.dot_bin)
    torch.testing.assert_close(cached.z_i, plain.z_i, atol=0, rtol=0)
    assert len(set(map(tuple, cached.codes.tolist()))) == 5  # the draws are random, not a constant sequence
    other = sample_ar_prior(prior, z_t, tokens, mask, top_k=top_k, temperature=1.5,
                            generator=[torch.Generator().manual_seed(99 + i) for i in range(5)])  # fmt: skip
    assert not torch.equal(other.codes, cached.codes)


def test_sampling_uses_the_cache_by_default(monkeypatch):
    prior, (z_t, tokens, mask) = random_prior()

    def no_full_pass(*args, **kwargs):
        raise AssertionError("the default sampler re-ran the whole sequence")

    monkeypatch.setattr(prior, "forward", no_full_pass)
    out = sample_ar_prior(prior, z_t, tokens, mask, generator=torch.Generator().manual_seed(0))
    assert out.codes.shape == (5, CFG.components)


def test_diffusion_prior_is_unchanged_by_the_cache():
    """The shared transformer's uncached path is the diffusion prior's: pinned against an explicit reference."""
    torch.manual_seed(3)
    prior = DiffusionPrior(diffusion_prior_config("tiny", embed_dim=16, text_width=24, text_len=6)).eval()
    _, z_t, tokens, mask = synthetic_pairs(4)
    x, t = torch.randn(4, 16), torch.tensor([0, 10, 500, 999])
    out = prior(x, t, z_t=z_t, tokens=tokens, mask=mask)
    # Reference: attention written out by hand with the causal-and-padding mask of the paper's sequence.
    net = prior.transformer
    from unclip.prior.transformer import timestep_embedding

    h = torch.cat([prior.token_proj(tokens), torch.stack([prior.z_t_proj(z_t),
                   prior.time_mlp(timestep_embedding(t, 64)), prior.x_proj(x),
                   prior.output_token.expand(4, -1)], 1)], 1) + prior.pos  # fmt: skip
    valid = torch.cat([mask, torch.ones(4, 4, dtype=torch.bool)], 1)
    s = h.shape[1]
    allowed = torch.tril(torch.ones(s, s, dtype=torch.bool))[None] & (valid[:, None] | torch.eye(s, dtype=torch.bool))
    for blk in net.blocks:
        q, k, v = blk.qkv(blk.ln1(h)).view(4, s, 3, 4, 16).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2) / 4.0).masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
        h = h + blk.proj((att @ v).transpose(1, 2).reshape(4, s, 64))
        h = h + blk.mlp(blk.ln2(h))
    ref = prior.out(net.ln_f(h)[:, -1])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert out.abs().max() > 1e-2  # not a trivially zero output
