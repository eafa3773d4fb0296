"""``unclip eval fid`` round trip: JSON out, the cache used on the second run, bad input reported in one line."""

import json

import numpy as np
from eval_helpers import shapes_images, write_folder

from unclip.cli.main import main


def test_eval_fid_json_round_trip(tmp_path, capsys):
    images = shapes_images(4)
    real = write_folder(tmp_path / "real", images)
    (real / "broken.png").write_bytes(b"not a png")
    noisy = np.clip(images.astype(np.int16) + np.random.default_rng(0).integers(-40, 41, images.shape), 0, 255)
    fake = write_folder(tmp_path / "fake", noisy.astype(np.uint8))
    write_folder(fake, shapes_images(1, resolution=96), prefix="big")  # a mixed size
    args = ["eval", "fid", str(real), str(fake), "--json", "--cache-dir", str(tmp_path / "cache"), "--batch-size", "3"]
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["metric"] == "fid" and report["fid"] > 1.0
    assert (report["n_a"], report["n_b"]) == (4, 5)
    assert [name for name, _ in report["skipped_a"]] == ["broken.png"] and report["skipped_b"] == []
    assert not report["cached_a"] and report["images_per_second"] > 0
    assert "only 4 images" in captured.err and "skipped 1 unreadable" in captured.err and "sizes" in captured.err

    assert main(args) == 0  # second run: both folders from the cache, same number
    again = json.loads(capsys.readouterr().out)
    assert again["cached_a"] and again["cached_b"] and again["images_per_second"] is None
    assert again["fid"] == report["fid"]

    assert main(["eval", "fid", str(real), str(real), "--no-cache"]) == 0  # the text form
    out = capsys.readouterr().out
    assert out.startswith("FID 0.0000") and "A: 4 (1 skipped)" in out and "cached: none" in out


def test_eval_fid_bad_input(tmp_path, capsys):
    assert main(["eval", "fid", str(tmp_path / "missing"), str(tmp_path), "--json"]) == 2
    assert "missing" in capsys.readouterr().err
    one = write_folder(tmp_path / "one", shapes_images(1))
    assert main(["eval", "fid", str(one), str(one), "--no-cache"]) == 2
    assert "at least 2 readable images, found 1" in capsys.readouterr().err
    assert main(["eval"]) == 2  # no metric: usage
