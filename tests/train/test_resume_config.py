"""Resuming a run whose configuration holds sequences: config.json stores tuples as lists, and that is no change."""

import json

from unclip.cli.main import main
from unclip.train.config import RunConfig, from_dict, incompatibilities


def test_a_list_in_config_json_equals_the_presets_tuple(tmp_path):
    out = tmp_path / "run"
    args = ["train", "upsampler", "--preset", "tiny", "--data", "shapes", "--batch-size", "2", "--no-progress",
            "--set", "model.sample_steps=1", "--out", str(out)]  # fmt: skip
    assert main([*args, "--steps", "1"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert isinstance(saved["model"]["upsampler"]["unet"]["channel_mult"], list)  # the preset holds a tuple
    assert main([*args, "--steps", "2", "--resume"]) == 0  # refused as "different configuration" before the fix
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()][-1] == 2


def test_a_real_change_inside_a_sequence_is_still_refused(tmp_path):
    run = {"stage": "upsampler", "preset": "tiny", "data": "shapes", "world_size": 1, "format_version": 1,
           "model": {"unet": {"channel_mult": [1, 2]}}, "train": {}}  # fmt: skip
    saved = from_dict(RunConfig, run)
    same = from_dict(RunConfig, {**run, "model": {"unet": {"channel_mult": (1, 2)}}})
    other = from_dict(RunConfig, {**run, "model": {"unet": {"channel_mult": (1, 3)}}})
    assert incompatibilities(saved, same) == []
    (problem,) = incompatibilities(saved, other)
    assert problem.startswith("model.unet:")
