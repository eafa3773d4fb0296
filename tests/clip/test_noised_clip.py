"""The noise-aware CLIP tower (unclip.clip.noised): it starts as the clean CLIP's image side, reads x_t at the
decoder's resolution and timestep, persists strictly and refuses a decoder it cannot guide."""

import pytest
import torch

from unclip.clip import CLIP, PRESETS, make_tokenizer
from unclip.clip.noised import NoisedImageEncoder, check_noised_clip, clip_image_state, from_clip
from unclip.model_folder import CheckpointError
from unclip.models.decoder import Decoder
from unclip.models.presets import decoder_preset


@pytest.fixture
def clip() -> CLIP:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]  # a 32 px tower
    return CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).eval()


def _images(n: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("resolution", [16, 32])
def test_it_starts_as_the_clean_clip_at_every_timestep(clip, resolution):
    # The timestep layer's output starts at zero, so before training f(x, t) = CLIP(x) for every t, with x resized to
    # the tower as the clean CLIP resizes a decoder image.
    model = from_clip(clip, resolution).eval()
    x = _images(3, resolution) * 0.5  # inside the range after resizing, where CLIP's own resize clamps (x_t is not)
    with torch.no_grad():
        want = clip.encode_image(x)
        for t in (0, 500, 999):
            torch.testing.assert_close(model(x, torch.full((3,), t)), want, atol=1e-5, rtol=1e-5)


def test_the_timestep_reaches_the_embedding_once_its_layer_is_trained(clip):
    model = from_clip(clip, 32).eval()
    with torch.no_grad():
        model.time[2].weight.normal_(std=0.5)
        x = _images(2, 32)
        early, late = model(x, torch.tensor([10, 10])), model(x, torch.tensor([900, 900]))
        scalar = model(x, torch.tensor(900))  # one timestep for the whole batch
    assert (early - late).abs().max() > 1e-2
    torch.testing.assert_close(scalar, late)
    torch.testing.assert_close(early.norm(dim=-1), torch.ones(2))


def test_folder_round_trip_and_foreign_folders(clip, tmp_path):
    model = from_clip(clip, 16).eval()
    with torch.no_grad():
        model.time[2].weight.normal_(std=0.1)
    model.save_pretrained(tmp_path / "noised")
    back = NoisedImageEncoder.from_pretrained(tmp_path / "noised")
    assert back.config == model.config
    x, t = _images(2, 16), torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(back(x, t), model(x, t))
    clip.save_pretrained(tmp_path / "clip")
    with pytest.raises(CheckpointError, match="unclip-noised-clip"):
        NoisedImageEncoder.from_pretrained(tmp_path / "clip")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NoisedImageEncoder.from_pretrained(tmp_path / "nothing")


def test_bad_inputs_are_refused_with_the_shape_it_reads(clip):
    model = from_clip(clip, 16)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model(_images(2, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="one timestep per image"):
        model(_images(2, 16), torch.tensor([1, 2, 3]))
    state = clip.state_dict()
    del state["visual.pos"]
    with pytest.raises(ValueError, match=r"visual\.pos"):
        clip_image_state(state, model)


def test_a_decoder_of_another_resolution_schedule_or_embedding_is_refused(clip):
    model = from_clip(clip, 16)
    fits = Decoder(decoder_preset("tiny", clip_dim=32, text_dim=64, resolution=16))
    check_noised_clip(model, fits)
    other_res = Decoder(decoder_preset("tiny", clip_dim=32, text_dim=64, resolution=32))
    with pytest.raises(ValueError, match="reads 16 px x_t"):
        check_noised_clip(model, other_res)
    linear = from_clip(clip, 16, schedule="linear")
    with pytest.raises(ValueError, match="linear schedule"):
        check_noised_clip(linear, fits)
