"""The emoji set (OpenMoji drawings, CLDR names) and a tokenizer trained on a dataset's captions."""

import json

import numpy as np
import pytest
from PIL import Image

from unclip.cli.main import main
from unclip.data.emoji import caption_of, list_emoji, render, split_of, write_emoji_dataset


def test_names_are_the_cldr_short_names_in_words():
    assert caption_of(":OK_hand_medium-light_skin_tone:") == "OK hand medium-light skin tone"
    assert caption_of(":flag_Japan:") == "flag Japan"
    found = {e.code: e.name for e in list_emoji()}
    assert len(found) > 3500
    assert found["1F52D"] == "telescope"
    assert found["1F44B-1F3FD"] == "waving hand medium skin tone"  # a modifier sequence, named as one
    assert found["2764"] == "red heart"
    assert found["1F1F1-1F1F9"] == "flag Lithuania"  # CLDR's "flag: Lithuania"; the emoji package says "Lithuania"
    assert found["1F3F4-E0067-E0062-E0065-E006E-E0067-E007F"] == "flag England"
    assert found["1F3F3-FE0F-200D-1F308"] == "rainbow flag"  # named a flag already
    assert "E000" not in found  # OpenMoji's own icons have no Unicode name


def test_a_rendering_is_the_drawing_on_the_background():
    telescope = next(e for e in list_emoji() if e.code == "1F52D")
    image = np.asarray(render(telescope.svg, 48, (10, 200, 30)))
    assert image.shape == (48, 48, 3)
    assert (image[0, 0] == (10, 200, 30)).all()  # the corner is background
    drawn = (np.abs(image.astype(int) - (10, 200, 30)).sum(-1) > 60).mean()
    assert 0.1 < drawn < 0.9  # the drawing covers part of the square


def test_the_split_is_a_fixed_share_by_code():
    codes = [e.code for e in list_emoji()]
    test = [c for c in codes if split_of(c, 0.1) == "test"]
    assert 0.08 < len(test) / len(codes) < 0.12
    assert test == [c for c in codes if split_of(c, 0.1) == "test"]  # no state: the same every time
    assert {split_of(c, 0.0) for c in codes} == {"train"}
    assert set(test) <= {c for c in codes if split_of(c, 0.3) == "test"}  # a larger share only adds


def test_the_folders_read_as_training_data(tmp_path):
    out = tmp_path / "emoji"
    counts = write_emoji_dataset(out, size=32, test_fraction=0.25, template="an emoji of {}", limit=40)
    assert counts["train"] + counts["test"] == 40 and counts["test"] > 0
    rows = {s: [json.loads(x) for x in (out / s / "metadata.jsonl").read_text().splitlines()] for s in counts}
    first = [e for e in list_emoji()[:40]]
    assert sorted(r["code"] for s in rows for r in rows[s]) == sorted(e.code for e in first)
    for split, items in rows.items():
        assert all(split_of(r["code"], 0.25) == split for r in items)
        assert all(r["text"].startswith("an emoji of ") for r in items)
        with Image.open(out / split / items[0]["file_name"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert "CC BY-SA 4.0" in (out / "LICENSE.txt").read_text()
    from unclip.data.check import check_data

    report = check_data(f"folder:{out}/test", resolution=32)
    assert report.usable == counts["test"]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"size": 4}, "size must be 8-1024"), ({"test_fraction": 1.0}, "test_fraction"),
     ({"template": "emoji"}, "one {} for the name"), ({"background": "sky"}, "is not a colour")],
)  # fmt: skip
def test_bad_settings_write_nothing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_emoji_dataset(tmp_path / "out", limit=3, **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_trained_on_the_data_spends_fewer_tokens_than_shapes_bpe(tmp_path, capsys):
    from unclip.clip.tokenizer import make_tokenizer, shapes_tokenizer

    write_emoji_dataset(tmp_path / "emoji", size=16, test_fraction=0.0, limit=300)
    out = tmp_path / "tok.json"
    assert main(["data", "tokenizer", f"folder:{tmp_path}/emoji/train", "--out", str(out), "--vocab-size", "400"]) == 0
    assert "from 300 captions" in capsys.readouterr().out
    tok = make_tokenizer(str(out), 400, 16)
    assert 259 < tok.vocab_size <= 400
    names = [e.name for e in list_emoji()[:300]]
    ours = sum(len(tok.hf.encode(c).ids) for c in names)
    shapes = sum(len(shapes_tokenizer(400).hf.encode(c).ids) for c in names)
    assert ours < 0.7 * shapes
    assert tok.decode(tok([names[0]])[0][0].tolist()) == names[0].lower()  # lower-cased, as CLIP's
    assert main(["data", "tokenizer", "shapes", "--out", str(tmp_path / "x.json")]) == 2  # unlimited: needs --n
    assert "unlimited" in capsys.readouterr().err
