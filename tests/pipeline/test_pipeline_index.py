import json

import pytest

from unclip.model_folder import CheckpointError
from unclip.pipeline.index import FORMAT, FORMAT_VERSION, INDEX_FILE, clip_folder, component, read_index


def _write(folder, meta) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX_FILE).write_text(meta if isinstance(meta, str) else json.dumps(meta))


GOOD = {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": {},
        "components": {"clip": "c", "prior": "p", "decoder": "d", "upsamplers": ["u0"]}}  # fmt: skip


def test_a_valid_index_names_its_components(tmp_path):
    _write(tmp_path / "m", GOOD)
    assert read_index(tmp_path / "m")["components"]["upsamplers"] == ["u0"]
    assert component(tmp_path / "m", "prior") == tmp_path / "m" / "p"
    assert clip_folder(tmp_path / "m") == tmp_path / "m" / "c"
    (tmp_path / "bare").mkdir()
    assert clip_folder(tmp_path / "bare") == tmp_path / "bare"  # not a pipeline: the CLIP folder itself


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("{not json", "not valid JSON"),
        ({**GOOD, "format": "other"}, "format is .other., expected .unclip-pipeline."),
        ({**GOOD, "format_version": 99}, "unknown format_version 99"),
        ({**GOOD, "components": {"clip": "c"}}, "must name the clip, prior, decoder"),
        ({**GOOD, "components": {**GOOD["components"], "upsamplers": "u0"}}, "list of upsamplers"),
        ({**GOOD, "settings": []}, "settings must be an object"),
        ({**GOOD, "components": {**GOOD["components"], "noised_clip": 3}}, "noised_clip, when present, must name"),
    ],
)
def test_bad_indexes_are_refused_with_the_reason(tmp_path, meta, message):
    _write(tmp_path / "m", meta)
    with pytest.raises(CheckpointError, match=message):
        read_index(tmp_path / "m")


def test_a_clip_only_reader_needs_only_the_clip_component(tmp_path):
    _write(tmp_path / "m", {**GOOD, "components": {"clip": "c"}})
    assert clip_folder(tmp_path / "m") == tmp_path / "m" / "c"
    with pytest.raises(CheckpointError, match="prior"):
        component(tmp_path / "m", "prior")
    with pytest.raises(FileNotFoundError, match=r"no pipeline\.json"):
        read_index(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clip_folder(tmp_path / "missing")
