"""``unclip train --channels-last``: the losses of the default layout, and a clear refusal where it cannot apply."""

import json

import pytest
from tiny_stage import make_folder, register

from unclip.cli.main import main


def losses(out, *args):
    # Two steps: the second loss is computed with weights the first step's gradients moved, so it checks the
    # backward pass through the channels-last network too.
    code = main(["train", *args, "--data", "shapes", "--out", str(out), "--no-progress", "--steps", "2",
                 "--set", "train.log_every=1", "--set", "train.sample_count=0"])  # fmt: skip
    assert code == 0
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", ["upsampler", "decoder"])
def test_channels_last_training_gives_the_same_losses(stage, tmp_path, tiny_clip):
    args = [stage, "--preset", "tiny", "--batch-size", "2"]
    if stage == "decoder":
        args += ["--clip", str(tiny_clip)]
    ref = losses(tmp_path / "ref", *args)
    got = losses(tmp_path / "cl", *args, "--channels-last")
    assert json.loads((tmp_path / "cl" / "config.json").read_text())["train"]["channels_last"] is True
    assert len(got) == 2 and ref[0] != ref[1]
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_a_network_without_2d_convolutions_is_refused_before_any_work(tmp_path, capsys):
    register()  # tests/train/tiny_stage.py: an MLP denoiser
    data = make_folder(tmp_path / "data", n=4)
    out = tmp_path / "run"
    args = ["train", "tiny", "--data", f"folder:{data}", "--out", str(out), "--no-progress", "--channels-last"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train.channels_last: stage 'tiny'" in err and "TinyNet has no 4-D (Conv2d) weights" in err
    assert not out.exists()  # no run folder to trip over on the next try


def test_channels_last_must_be_a_boolean(tmp_path, capsys):
    args = ["train", "upsampler", "--data", "shapes", "--out", str(tmp_path / "r"), "--dry-run",
            "--set", "train.channels_last=1"]  # fmt: skip
    assert main(args) == 2
    assert "train.channels_last must be true or false, got 1" in capsys.readouterr().err
