"""Our loader of transformers-format CLIP folders against transformers' own forward (tiny random configs)."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unclip.clip import CheckpointError, load_clip  # noqa: E402
from unclip.clip.hf import convert_state_dict  # noqa: E402

TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=16, bos_token_id=97, eos_token_id=98, pad_token_id=1)  # fmt: skip
VISION = dict(image_size=30, patch_size=6, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
              num_attention_heads=4)  # fmt: skip


def _ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 97, (3, 16), generator=g)
    ids[:, 0] = 97
    ids[0, 5], ids[1, 15], ids[2, 9] = 98, 98, 98
    ids[2, 10:] = 98  # padding with EOT, as OpenAI's folders do: pooling must take the first one
    return ids


def _pixels_for_ours(model, hf_pixels):
    # transformers takes normalised pixels; ours takes [-1, 1] and normalises inside: undo the statistics.
    return (hf_pixels * model.pixel_std + model.pixel_mean) * 2 - 1


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_clipmodel_folder_matches_transformers(tmp_path, act):
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={**TEXT, "hidden_act": act}, vision_config={**VISION, "hidden_act": act}, projection_dim=24
    )
    ref = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        ref.logit_scale.fill_(3.1)  # not the default, so the loader must really read it
    ref.save_pretrained(tmp_path)
    ours = load_clip(tmp_path)
    ids, hf_pixels = _ids(), torch.randn(3, 3, 30, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = ref(input_ids=ids, pixel_values=hf_pixels)
        z_i = ours.image_features(_pixels_for_ours(ours, hf_pixels))
        z_t, states = ours.text_features(ids)
        logits = ours.temperature_scale() * z_i @ z_t.T
    torch.testing.assert_close(z_i, out.image_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(z_t, out.text_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(states, out.text_model_output.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, out.logits_per_image, rtol=0, atol=1e-4)


def test_karlo_layout_text_and_image_encoders(tmp_path):
    torch.manual_seed(0)
    text = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**TEXT, projection_dim=24)).eval()
    vision = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**VISION, projection_dim=24))
    vision.eval()
    text.save_pretrained(tmp_path / "text_encoder")
    vision.save_pretrained(tmp_path / "image_encoder")
    ours = load_clip(tmp_path)
    ids, hf_pixels = _ids(), torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        ref_t = text(input_ids=ids).text_embeds
        ref_i = vision(pixel_values=hf_pixels).image_embeds
        z_t, _ = ours.text_features(ids, normalize=False)
        z_i = ours.image_features(_pixels_for_ours(ours, hf_pixels), normalize=False)
    torch.testing.assert_close(z_t, ref_t, rtol=0, atol=1e-5)
    torch.testing.assert_close(z_i, ref_i, rtol=0, atol=1e-5)


def test_clip_vocab_and_merges_tokenize_like_transformers(tmp_path):
    from diffusers_unclip_folder import write_clip_bpe

    merges = ["r e", "re d</w>", "c i", "ci r", "cir c", "l e</w>", "circ le</w>", "t h", "th e</w>", "a b"]
    write_clip_bpe(tmp_path, merges)
    ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))

    from unclip.clip.hf import load_hf_tokenizer

    ours = load_hf_tokenizer(tmp_path, context_length=64)
    texts = ["A red circle", "the  RED circle's edge!! 123", "héllo ✓ world", "abcircle red", "The circle."]
    for text in texts:
        assert ours.tokenize([text])[0] == ref(text)["input_ids"], text


def test_unknown_weight_names_are_refused():
    with pytest.raises(CheckpointError, match=r"unexpected key.*text_model\.pooler\.weight"):
        convert_state_dict({"text_model.pooler.weight": torch.zeros(2)})


def test_wrong_layer_count_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    ref = transformers.CLIPModel(transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=24))
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) text.transformer.blocks.2"):
        load_clip(tmp_path)
