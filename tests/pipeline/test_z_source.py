"""§5.1's ablations in the pipeline: z_t in place of the prior's z_i, and a caption-only (GLIDE-like) decoder."""

import dataclasses

import pytest
import torch
from tiny_stack import tiny_pipeline

from unclip.models.decoder import Decoder, guided_denoiser


def _caption_only(decoder: Decoder) -> Decoder:
    """The same weights under a config that says z_i was dropped in every training step."""
    config = dataclasses.replace(decoder.config, p_drop_z_i=1.0)
    twin = Decoder(config)
    twin.load_state_dict(decoder.state_dict())
    return twin.eval()


def test_z_source_text_feeds_the_caption_embedding_and_skips_the_prior():
    pipe = tiny_pipeline(upsampler=False)
    enc, empty = pipe.encode_text(["a red circle", "two blue squares"])
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    z_text = pipe.sample_z_i(enc, empty, gens, dataclasses.replace(pipe.settings, z_source="text"))
    assert torch.equal(z_text, enc.embedding)
    z_prior = pipe.sample_z_i(enc, empty, gens, pipe.settings)
    assert not torch.allclose(z_prior, enc.embedding, atol=1e-3)

    def no_prior(*args, **kwargs):
        raise AssertionError("the prior ran")

    pipe.prior.forward = no_prior
    out = pipe("a red circle", seed=3, z_source="text")
    assert torch.equal(out.z_i[0], pipe.encode_text(["a red circle"])[0].embedding[0])


def test_caption_only_decoder_ignores_z_i_in_every_guidance_branch():
    decoder = tiny_pipeline(upsampler=False).decoder
    glide = _caption_only(decoder)
    assert glide.caption_only and not decoder.caption_only
    b, res = 2, decoder.config.resolution
    x = torch.randn(b, 3, res, res, generator=torch.Generator().manual_seed(0))
    t = torch.full((b,), 500)
    tokens = torch.randn(b, 5, decoder.config.text_dim, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(b, 5, dtype=torch.bool)
    z_a, z_b = torch.nn.functional.normalize(torch.randn(2, b, decoder.config.clip_dim), dim=-1)
    for net, should_differ in ((glide, False), (decoder, True)):
        den_a, _ = guided_denoiser(net, z_a, tokens, mask, scales=(3.0, 2.0))
        den_b, _ = guided_denoiser(net, z_b, tokens, mask, scales=(3.0, 2.0))
        with torch.no_grad():
            differ = not torch.allclose(den_a(x, t).x0, den_b(x, t).x0, atol=1e-6)
        assert differ == should_differ


def test_caption_only_pipeline_runs_no_prior_and_still_follows_the_caption():
    pipe = tiny_pipeline(upsampler=False)
    pipe.decoder = _caption_only(pipe.decoder)

    def no_prior(*args, **kwargs):
        raise AssertionError("the prior ran")

    pipe.prior.forward = no_prior
    a = pipe(["a red circle", "two blue squares"], seed=[5, 5], decoder_guidance_text=3.0)
    assert torch.count_nonzero(a.z_i) == 0
    assert not torch.allclose(a.tensors[0], a.tensors[1], atol=1e-4)  # same seed, other caption, other image


def test_z_source_is_validated():
    pipe = tiny_pipeline(upsampler=False)
    with pytest.raises(ValueError, match="z_source must be one of prior, text"):
        pipe("a star", z_source="image")


def test_z_source_text_keeps_the_unconditional_sample_for_an_empty_prompt():
    pipe = tiny_pipeline(upsampler=False)
    enc, empty = pipe.encode_text(["a red circle", ""])
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    z = pipe.sample_z_i(enc, empty, gens, dataclasses.replace(pipe.settings, z_source="text"))
    assert torch.equal(z[0], enc.embedding[0])  # the caption's z_t
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    prior = pipe.sample_z_i(enc, empty, gens, pipe.settings)
    assert torch.allclose(z[1], prior[1])  # not the z_t of the placeholder text: the prior's unconditional draw
    assert not torch.allclose(z[1], enc.embedding[1], atol=1e-3)


def test_prior_combine_mean_gives_the_mean_of_the_candidates_the_pipeline_draws():
    from unclip.prior import mean_of_n, sample_diffusion_prior
    from unclip.prior.caption_tokens import fit_tokens

    pipe = tiny_pipeline(upsampler=False)
    enc, empty = pipe.encode_text(["a red circle", "two blue squares"])
    s = dataclasses.replace(pipe.settings, prior_best_of=4, prior_combine="mean")
    z = pipe.sample_z_i(enc, empty, [torch.Generator().manual_seed(k) for k in (0, 1)], s)
    tokens, mask = fit_tokens(enc.token_states, enc.mask, pipe.prior.config.text_len)
    draws = sample_diffusion_prior(
        pipe.prior, enc.embedding, tokens, mask, guidance_scale=s.prior_guidance, steps=s.prior_steps,
        sampler=s.prior_sampler, best_of=4, generator=[torch.Generator().manual_seed(k) for k in (0, 1)],
    )  # fmt: skip
    torch.testing.assert_close(z, mean_of_n(draws.candidates))
    with pytest.raises(ValueError, match="prior_combine must be one of best, mean"):
        pipe("a star", prior_combine="median")
