"""``unclip data check``: a dataset read as training reads it, with what is usable and what is not."""

import json

import numpy as np
import pytest
from PIL import Image

from unclip.cli.main import main
from unclip.data.check import check_data


def _folder(root):
    """Five images of growing height (40..80 px by 90), one unreadable, one named but missing, one caption null."""
    root.mkdir()
    rows = []
    for i in range(5):
        Image.fromarray(np.zeros((40 + 10 * i, 90, 3), np.uint8)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": " ".join(["red"] * (2 + 100 * (i == 4)))})
    (root / "3.png").write_bytes(b"not a png")
    rows += [{"file_name": "9.png", "text": "gone"}, {"file_name": "0.png", "text": None}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def test_check_counts_what_training_would_use_and_skip(tmp_path):
    from tiny_stack import tiny_pipeline

    with pytest.warns(UserWarning, match="1 of 7 named images do not exist"):
        report = check_data(str(_folder(tmp_path / "d")), resolution=64, clip=tiny_pipeline().clip)
    assert (report.records, report.usable) == (7, 4) and report.source == "folder (metadata table)"
    assert report.problems == {"unreadable image": 2, "no caption in the metadata table": 1}
    assert report.examples["no caption in the metadata table"] == "0#1"
    assert report.short_side == {"min": 40, "median": 55, "max": 80} and report.below_resolution == 3
    assert report.aspect["max"] == pytest.approx(90 / 40)
    assert report.caption_words == {"min": 2, "median": 2, "max": 102} and report.unique_captions == 2
    assert report.truncated == 1  # the 102-word caption; two words fit any context


def test_cli_exit_codes_and_json(tmp_path, capsys):
    folder = _folder(tmp_path / "d")
    with pytest.warns(UserWarning):
        assert main(["data", "check", str(folder), "--n", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 3 and out["usable"] == 3 and out["truncated"] is None
    with pytest.warns(UserWarning):
        assert main(["data", "check", f"folder:{folder}"]) == 0
    assert "skipped      2  unreadable image (e.g. 3)" in capsys.readouterr().out
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "3.png", "text": "x"}))
    assert main(["data", "check", str(folder)]) == 1  # nothing usable: training could not use this data
    assert main(["data", "check", "shapes"]) == 2  # unlimited: needs --n
    assert "unlimited" in capsys.readouterr().err
    assert main(["data", "check", "shapes", "--n", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["usable"] == 4
