"""Embedding guidance in the pipeline (``decoder_embedding_guidance``): it pulls the decoder's x̂0 toward images
CLIP embeds at the decoder's own z_i, and leaves DDIM inversion alone."""

import dataclasses

import pytest
import torch
from tiny_stack import tiny_pipeline

from unclip.pipeline.manipulations import invert
from unclip.pipeline.settings import SamplingSettings


def _cos(pipe, images: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.nn.functional.cosine_similarity(pipe.clip.encode_image(images), z, dim=-1)


@pytest.mark.parametrize("gradient, scale", [("x0", 0.5), ("denoiser", 5.0)])
def test_guided_estimate_is_closer_to_its_own_z_i_in_clip_space(gradient, scale):
    pipe = tiny_pipeline(upsampler=False)
    g = torch.Generator().manual_seed(0)
    res = pipe.decoder.config.resolution
    z = torch.nn.functional.normalize(torch.randn(3, pipe.clip.embed_dim, generator=g), dim=-1)
    x, t = torch.randn(3, 3, res, res, generator=g), torch.full((3,), 200)
    plain, _ = pipe.decoder_denoiser(z)
    s = dataclasses.replace(
        pipe.settings, decoder_embedding_guidance=scale, decoder_embedding_guidance_gradient=gradient
    )
    guided, _ = pipe.decoder_denoiser(z, s=s)
    with torch.no_grad():
        before, after = plain(x, t).x0, guided(x, t).x0
    assert not torch.allclose(before, after)
    # Each row moves toward its own z_i: closer to it than before, and by more than toward another row's z_i.
    gain_own = _cos(pipe, after, z) - _cos(pipe, before, z)
    gain_other = _cos(pipe, after, z.roll(1, 0)) - _cos(pipe, before, z.roll(1, 0))
    assert bool((gain_own > 0).all()) and bool((gain_own > gain_other).all())
    assert after.abs().max() <= 1.0  # clamped again after the move


@pytest.mark.parametrize("gradient, scale", [("x0", 500.0), ("denoiser", 5000.0)])
def test_guidance_changes_samples_but_not_the_inverted_latents(gradient, scale):
    settings = SamplingSettings(decoder_steps=4, inversion_steps=4, decoder_guidance_image=1.0)  # unsaturated x̂0
    pipe = tiny_pipeline(upsampler=False, settings=settings)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _, x_off = invert(pipe, image)
    # Large scales: the random tiny decoder's x̂0 is saturated at ±1 in most pixels, where the clamp passes no gradient.
    pipe.settings = dataclasses.replace(
        settings, decoder_embedding_guidance=scale, decoder_embedding_guidance_gradient=gradient
    )
    z_on, x_on = invert(pipe, image)
    torch.testing.assert_close(x_on, x_off)  # eta = 0 decoding of (z_i, x_T) must retrace an unguided path
    gens = lambda: [torch.Generator().manual_seed(5)]  # noqa: E731
    with torch.no_grad():
        guided = pipe.decode(z_on, gens())
        plain = pipe.decode(z_on, gens(), s=settings)
    assert (guided - plain).abs().max() > 1e-3


@pytest.mark.parametrize("value", [-0.1, 10001.0, True, "2"])
def test_out_of_range_scale_is_refused(value):
    with pytest.raises(ValueError, match="decoder_embedding_guidance"):
        SamplingSettings(decoder_embedding_guidance=value)
    with pytest.raises(ValueError, match="decoder_embedding_guidance_gradient"):
        SamplingSettings(decoder_embedding_guidance_gradient="pixels")


@pytest.mark.parametrize("start, stop", [(0.5, 0.5), (0.4, 0.6), (1.5, 0.0), (1.0, -0.1), (True, 0.0)])
def test_interval_outside_the_schedule_or_empty_is_refused(start, stop):
    with pytest.raises(ValueError, match="decoder_embedding_guidance_start"):
        SamplingSettings(decoder_embedding_guidance_start=start, decoder_embedding_guidance_stop=stop)


def test_the_pipeline_guides_only_inside_its_interval():
    pipe = tiny_pipeline(upsampler=False)
    g = torch.Generator().manual_seed(2)
    res = pipe.decoder.config.resolution
    z = torch.nn.functional.normalize(torch.randn(2, pipe.clip.embed_dim, generator=g), dim=-1)
    x = torch.randn(2, 3, res, res, generator=g)
    on = dataclasses.replace(pipe.settings, decoder_embedding_guidance=5.0)
    window = dataclasses.replace(on, decoder_embedding_guidance_start=0.9, decoder_embedding_guidance_stop=0.5)
    plain, guided, windowed = (pipe.decoder_denoiser(z, s=s)[0] for s in (pipe.settings, on, window))
    with torch.no_grad():
        for t, inside in ((200, False), (700, True), (950, False)):
            tt = torch.full((2,), t)
            want = (guided if inside else plain)(x, tt).x0
            torch.testing.assert_close(windowed(x, tt).x0, want)
            assert not torch.allclose(guided(x, tt).x0, plain(x, tt).x0)  # the guidance moves every one of them
