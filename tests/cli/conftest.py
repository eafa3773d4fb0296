import pytest
from tiny_stack import tiny_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny saved model folder at the cheapest settings: the commands' plumbing is under test here (the maths is in
    tests/pipeline)."""
    from unclip.pipeline import SamplingSettings

    folder = tmp_path_factory.mktemp("model") / "tiny"
    cheap = SamplingSettings(prior_steps=2, decoder_steps=3, upsampler_steps=2, inversion_steps=3)
    tiny_pipeline(settings=cheap).save_pretrained(folder)
    return folder
