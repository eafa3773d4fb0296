"""``--set`` / ``--vary`` parsing: values typed by the field they set, and the ``decoder_guidance`` shorthand."""

import pytest

from unclip.pipeline import SamplingSettings
from unclip.pipeline.settings import expand_shorthands, parse_overrides, parse_setting


def test_a_float_setting_stored_as_a_whole_number_still_takes_a_fraction():
    # pipeline.json may hold "decoder_guidance_image": 3 (valid: the check accepts ints); the field is a float.
    settings = SamplingSettings(decoder_guidance_image=3, prior_guidance=4)
    assert parse_setting("decoder_guidance", "2.5", settings) == 2.5
    assert parse_setting("prior_guidance", "1.5", settings) == 1.5
    assert parse_overrides(["decoder_guidance_image=0.5"], settings) == {"decoder_guidance_image": 0.5}


def test_integer_settings_stay_integers():
    assert parse_setting("decoder_steps", "10", SamplingSettings()) == 10
    with pytest.raises(ValueError, match=r"'2\.5' is not an integer"):
        parse_setting("decoder_steps", "2.5", SamplingSettings())


def test_the_shorthand_and_one_of_its_scales_together_are_refused():
    # decoder_guidance would silently overwrite the scale given beside it, and a sweep row would name the wrong one.
    with pytest.raises(ValueError, match="decoder_guidance sets both decoder scales"):
        expand_shorthands({"decoder_guidance": 3.0, "decoder_guidance_image": 5.0})
    with pytest.raises(ValueError, match="decoder_guidance sets both decoder scales"):
        parse_overrides(["decoder_guidance_text=5", "decoder_guidance=3"], SamplingSettings())
    assert expand_shorthands({"decoder_guidance": 3.0, "decoder_steps": 5}) == {
        "decoder_steps": 5, "decoder_guidance_image": 3.0, "decoder_guidance_text": 3.0,
    }  # fmt: skip


def test_the_point_estimate_sampler_is_the_priors_alone_and_returns_one_estimate():
    # mmse is E[x0 | condition] at t = T: the x0-predicting prior's point estimate, saturated noise for an
    # eps-predicting image stage, and best-of-N over one estimate would only repeat it.
    point = parse_overrides(["prior_sampler=mmse", "prior_best_of=1", "prior_guidance=1"], SamplingSettings())
    assert point == {"prior_sampler": "mmse", "prior_best_of": 1, "prior_guidance": 1.0}
    with pytest.raises(ValueError, match=r"prior_sampler mmse returns the one point estimate.*prior_best_of=1"):
        parse_overrides(["prior_sampler=mmse"], SamplingSettings(prior_best_of=2))
    for stage in ("decoder_sampler", "upsampler_sampler"):
        with pytest.raises(ValueError, match=f"{stage} must be one of ddpm, ddim, dpmpp_2m, got 'mmse'"):
            parse_overrides([f"{stage}=mmse"], SamplingSettings())
