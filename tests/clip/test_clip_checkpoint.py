import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from unclip.clip import CLIP, CheckpointError, from_pretrained, load_clip


@pytest.fixture
def folder(micro_clip, tmp_path):
    return micro_clip.save_pretrained(tmp_path / "clip")


def test_round_trip_gives_identical_outputs(micro_clip, folder):
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = CLIP.from_pretrained(folder)
    captions = ["a red circle left of a blue square", "three stars"]
    images = torch.linspace(-1, 1, 2 * 3 * 16 * 16).view(2, 3, 16, 16)
    a, b = micro_clip.encode_text(captions), loaded.encode_text(captions)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(micro_clip.encode_image(images), loaded.encode_image(images), rtol=0, atol=0)
    assert loaded.tokenizer == micro_clip.tokenizer
    assert loaded.config == micro_clip.config


def _edit_weights(folder, edit):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_missing_key_is_named(folder):
    _edit_weights(folder, lambda s: s.pop("text_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) text_proj.weight"):
        from_pretrained(folder)


def test_unexpected_key_is_named(folder):
    _edit_weights(folder, lambda s: s.__setitem__("extra.bias", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) extra.bias"):
        from_pretrained(folder)


def test_shape_mismatch_is_named(folder):
    _edit_weights(folder, lambda s: s.__setitem__("visual_proj.weight", torch.zeros(16, 31)))
    with pytest.raises(CheckpointError, match=r"visual_proj.weight: file \(16, 31\) vs model \(16, 32\)"):
        from_pretrained(folder)


def _edit_config(folder, edit):
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_unknown_format_version_is_refused(folder):
    _edit_config(folder, lambda m: m.__setitem__("format_version", 99))
    with pytest.raises(CheckpointError, match="unknown format_version 99"):
        from_pretrained(folder)


def test_unknown_config_key_is_refused(folder):
    _edit_config(folder, lambda m: m["config"]["vision"].__setitem__("patchsize", 4))
    with pytest.raises(CheckpointError, match=r"config.vision: unknown key\(s\) patchsize"):
        from_pretrained(folder)


def test_missing_tokenizer_is_named(folder):
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json is missing"):
        from_pretrained(folder)


def test_folder_that_is_not_a_clip(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="is not a CLIP checkpoint"):
        load_clip(tmp_path)


def test_model_without_tokenizer_cannot_be_saved(make_micro_config, tmp_path):
    with pytest.raises(ValueError, match="without a tokenizer"):
        CLIP(make_micro_config()).save_pretrained(tmp_path / "x")
