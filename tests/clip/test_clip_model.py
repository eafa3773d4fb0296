import numpy as np
import pytest
import torch

from unclip.clip import CLIP, PRESETS, CLIPConfig, TextConfig, VisionConfig, prepare_images
from unclip.clip.interface import CLIPEncoder


def test_clip_implements_the_interface(micro_clip):
    assert isinstance(micro_clip, CLIPEncoder)
    z_t, states, mask = micro_clip.encode_text(["a red circle", "two blue squares"])
    assert z_t.shape == (2, 16) and states.shape == (2, 40, 32) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [len("a red circle") + 2, len("two blue squares") + 2]  # bytes + BOS + EOT
    torch.testing.assert_close(z_t.norm(dim=-1), torch.ones(2))
    z_i = micro_clip.encode_image(torch.zeros(3, 3, 16, 16))
    assert z_i.shape == (3, 16)


def test_text_tower_is_causal(micro_clip):
    ids, _ = micro_clip.tokenize(["a red circle above a blue star"])
    changed = ids.clone()
    changed[0, 10] = (changed[0, 10] + 1) % 256
    _, a = micro_clip.text_features(ids)
    _, b = micro_clip.text_features(changed)
    torch.testing.assert_close(a[0, :10], b[0, :10], rtol=0, atol=0)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_pooling_at_eot_ignores_padding(micro_clip):
    ids, mask = micro_clip.tokenize(["a red circle"])
    eot = int(mask.sum()) - 1
    assert int(ids[0, eot]) == micro_clip.tokenizer.eos_id
    pooled, states = micro_clip.text(ids)
    torch.testing.assert_close(pooled[0], states[0, eot], rtol=0, atol=0)
    padded = ids.clone()
    padded[0, eot + 1 :] = 5  # whatever follows EOT must not change the embedding
    torch.testing.assert_close(micro_clip.text_features(padded)[0], micro_clip.text_features(ids)[0])
    shorter = ids[:, : eot + 1]  # nor must the padded length
    torch.testing.assert_close(micro_clip.text_features(shorter)[0], micro_clip.text_features(ids)[0])


def test_argmax_pooling_rule_picks_the_largest_id():
    cfg = CLIPConfig(
        embed_dim=8,
        vision=VisionConfig(image_size=8, patch_size=4, width=16, layers=1, heads=2, mlp=32),
        text=TextConfig(vocab_size=50, context_length=6, width=16, layers=1, heads=2, mlp=32, pooling="argmax"),
    )
    model = CLIP(cfg)
    ids = torch.tensor([[3, 7, 49, 2, 2, 2]])
    pooled, states = model.text(ids)
    torch.testing.assert_close(pooled[0], states[0, 2], rtol=0, atol=0)


def test_image_layouts_and_resizing_agree(micro_clip):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    as_float = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1
    z_hwc = micro_clip.encode_image(img)
    torch.testing.assert_close(micro_clip.encode_image(torch.from_numpy(img).permute(0, 3, 1, 2)), z_hwc)
    torch.testing.assert_close(micro_clip.encode_image(as_float), z_hwc)
    # A larger non-square image is resized on its short side and centre-cropped to the tower's size.
    big = prepare_images(torch.zeros(1, 3, 32, 48).uniform_(-1, 1), 16)
    assert big.shape == (1, 3, 16, 16)
    flat = prepare_images(torch.full((1, 3, 32, 48), 0.25), 16)
    torch.testing.assert_close(flat, torch.full((1, 3, 16, 16), 0.25))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 4, 16, 16), "3 channels"),
        (torch.zeros(3, 16, 16), "batch"),
        (torch.full((1, 3, 16, 16), 2.0), r"\[-1, 1\]"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.int32), "dtype"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        ("an image", "tensor"),
    ],
)
def test_bad_images_raise_with_the_value(micro_clip, images, message):
    with pytest.raises(ValueError, match=message):
        micro_clip.encode_image(images)


@pytest.mark.parametrize(
    ("captions", "message"),
    [([""], "caption 0 is empty"), (["ok", "  "], "caption 1 is empty"), ([3], "caption 0 must be a string"),
     ("a bare string", "list of strings"), ([], "empty list")],
)  # fmt: skip
def test_bad_captions_raise_with_the_value(micro_clip, captions, message):
    with pytest.raises(ValueError, match=message):
        micro_clip.encode_text(captions)


def test_overlong_caption_is_truncated_with_a_warning_and_keeps_eot(micro_clip):
    long = "a red circle " * 10
    with pytest.warns(UserWarning, match="truncated to context length 40"):
        ids, mask = micro_clip.tokenize([long])
    assert bool(mask.all()) and int(ids[0, -1]) == micro_clip.tokenizer.eos_id
    with pytest.warns(UserWarning):
        z, _, _ = micro_clip.encode_text([long])
    assert torch.isfinite(z).all()


def test_config_validation_names_the_values():
    with pytest.raises(ValueError, match="image_size 30 is not a multiple of patch_size 8"):
        VisionConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        TextConfig(width=64, heads=3)
    with pytest.raises(ValueError, match="act must be one of"):
        CLIPConfig(act="relu")


def test_tokenizer_must_fit_the_text_tower(make_micro_config):
    from unclip.clip import byte_tokenizer

    with pytest.raises(ValueError, match="context_length 20 differs"):
        CLIP(make_micro_config(), byte_tokenizer(20))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    with torch.device("meta"):  # no memory, no init cost: ViT-B/32 has ~151M parameters
        model = CLIP(PRESETS[name])
    n = sum(p.numel() for p in model.parameters())
    if name == "vit-b-32":
        assert 151_000_000 < n < 151_600_000  # OpenAI's ViT-B/32 CLIP: 151.3M parameters
    assert n > 0


def test_temperature_starts_at_point_07_and_is_clipped(micro_clip):
    assert float(micro_clip.temperature_scale().detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        micro_clip.logit_scale.fill_(10.0)
    assert float(micro_clip.temperature_scale().detach()) == pytest.approx(100.0, rel=1e-5)
