"""The decoder and upsampler stages run through the engine end to end, and reject what does not fit."""

import json

import pytest
import torch

from unclip.cli.main import main
from unclip.train.upsampler_stage import UpsamplerStageConfig, random_crops


def run(tmp_path, *args):
    out = tmp_path / "run"
    code = main(["train", *args, "--data", "shapes", "--out", str(out), "--no-progress", "--steps", "2",
                 "--set", "train.log_every=1", "--set", "train.checkpoint_every=2"])  # fmt: skip
    return code, out


def test_decoder_trains_on_a_frozen_clip(tmp_path, tiny_clip):
    code, out = run(tmp_path, "decoder", "--preset", "tiny", "--batch-size", "4", "--set", f"model.clip={tiny_clip}")
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["loss"] == r["loss"] and r["train/vlb"] > 0 for r in rows)
    assert json.loads((out / "config.json").read_text())["model"]["clip"] == str(tiny_clip)


def test_decoder_refuses_a_clip_of_another_size_before_training(tmp_path, tiny_clip, capsys):
    code, out = run(tmp_path, "decoder", "--preset", "small", "--set", f"model.clip={tiny_clip}")
    assert code == 2
    err = capsys.readouterr().err
    assert "embedding size 32" in err and "clip_dim 256" in err
    assert not (out / "checkpoints").exists()


def test_decoder_without_clip_says_how_to_pass_one(tmp_path, capsys):
    code, _ = run(tmp_path, "decoder", "--preset", "tiny")
    assert code == 2 and "model.clip=CLIP_DIR" in capsys.readouterr().err


def test_upsampler_trains_on_corrupted_crops(tmp_path):
    code, out = run(tmp_path, "upsampler", "--preset", "tiny", "--batch-size", "2")
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 < r["loss"] < 10 for r in rows)


def test_random_crops_are_aligned_deterministic_and_in_bounds():
    images = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    crops = random_crops(images, 16, 8, gens)
    again = random_crops(images, 16, 8, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert crops.shape == (2, 3, 16, 16) and torch.equal(crops, again)
    for img, crop in zip(images, crops, strict=True):
        y, x = divmod(int(crop[0, 0, 0]) % (64 * 64), 64)  # the top-left pixel's position in the source
        assert y % 8 == 0 and x % 8 == 0 and y + 16 <= 64 and x + 16 <= 64
        assert torch.equal(img[:, y : y + 16, x : x + 16], crop)


def test_crop_fraction_must_fit_the_downsampling_grid():
    from unclip.models.presets import upsampler_preset

    with pytest.raises(ValueError, match="crop size"):
        UpsamplerStageConfig(upsampler_preset("small", resolution=256), crop_fraction=3)


def test_clip_flag_and_nested_overrides_reach_the_config(tmp_path, capsys):
    args = ["train", "decoder", "--data", "shapes", "--out", str(tmp_path / "r"), "--dry-run", "--clip", "CLIPDIR",
            "--set", "model.decoder.unet.dropout=0.25", "--set", "model.decoder.p_drop_text=0.3"]  # fmt: skip
    assert main(args) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["clip"] == "CLIPDIR"
    assert model["decoder"]["unet"]["dropout"] == 0.25 and model["decoder"]["p_drop_text"] == 0.3
    assert main([*args[:7], "--set", "model.sample_steps.x=1"]) == 2
    assert "model.sample_steps is not a nested config section" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["decoder", "upsampler"])
def test_min_snr_weighting_reaches_the_loss(tmp_path, tiny_clip, stage):
    # Same seed, same first batch and weights: the logged (unweighted) mse is the same, while Min-SNR's weights,
    # at most 1 for an eps target, lower the loss that is back-propagated.
    extra = ["--set", f"model.clip={tiny_clip}"] if stage == "decoder" else []
    first = {}
    for weighting in ("uniform", "min_snr"):
        code, out = run(tmp_path / weighting, stage, "--preset", "tiny", "--batch-size", "4", *extra,
                        "--set", f"model.loss_weighting={weighting}")  # fmt: skip
        assert code == 0
        first[weighting] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["min_snr"]["train/mse"] == pytest.approx(first["uniform"]["train/mse"], rel=1e-6)
    assert first["min_snr"]["loss"] < first["uniform"]["loss"] - 1e-4


def test_unknown_loss_weighting_is_refused_before_training(tmp_path, tiny_clip, capsys):
    code, out = run(tmp_path, "decoder", "--preset", "tiny", "--set", f"model.clip={tiny_clip}",
                    "--set", "model.loss_weighting=snr")  # fmt: skip
    assert code == 2 and "loss weighting must be one of" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()
    from unclip.train.prior_stage import DiffusionPriorStageConfig

    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionPriorStageConfig(loss_weighting="min_snr", min_snr_gamma=-1)


def test_upsampler_crops_and_conditions_made_in_a_loader_worker_give_the_loss_made_in_the_step():
    from unclip.data.loader import MicroBatch
    from unclip.train.stage import Batch, get_stage

    stage = get_stage("upsampler")
    config = stage.presets()["tiny"].model
    torch.manual_seed(0)
    model = stage.build(config)
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    seeds = torch.tensor([11, 12, 13])
    mb = MicroBatch(0, images, ["a"] * 3, [None] * 3, torch.arange(3), seeds, 0, [])
    extra = stage.batch_extras(config)(mb)  # what a worker attaches to the micro-batch
    crops = extra.pop("image")  # the loader sends the crops to the device instead of the full images
    assert crops.shape == (3, 3, config.crop, config.crop)
    assert extra["low"].shape == (3, 3, config.crop // config.upsampler.factor, config.crop // config.upsampler.factor)
    in_worker = stage.loss(model, Batch(crops, mb.caption, mb.scene, mb.index, seeds, extra), config)
    in_step = stage.loss(model, Batch(images, mb.caption, mb.scene, mb.index, seeds), config)
    assert torch.equal(in_worker.loss, in_step.loss)
    other = stage.loss(model, Batch(images, mb.caption, mb.scene, mb.index, seeds + 1), config)
    assert not torch.equal(other.loss, in_step.loss)  # the seeds choose the crops, the corruption and the noise


def test_decoder_draws_made_in_a_loader_worker_give_the_loss_made_in_the_step(tiny_clip):
    from unclip.data.loader import MicroBatch
    from unclip.train.stage import Batch, get_stage

    stage = get_stage("decoder")
    config = stage.config_from_dict({**stage.config_to_dict(stage.presets()["tiny"].model), "clip": str(tiny_clip)})
    stage.prepare(config)
    torch.manual_seed(0)
    model = stage.build(config)
    res = config.decoder.resolution
    images = torch.rand(4, 3, res, res) * 2 - 1
    seeds = torch.tensor([5, 6, 7, 8])
    mb = MicroBatch(0, images, ["a red circle"] * 4, [None] * 4, torch.arange(4), seeds, 0, [])
    extra = stage.batch_extras(config)(mb)
    assert set(extra) == {"t", "noise", "drop_z_i", "drop_text"} and extra["noise"].shape == images.shape
    in_worker = stage.loss(model, Batch(images, mb.caption, mb.scene, mb.index, seeds, extra), config)
    in_step = stage.loss(model, Batch(images, mb.caption, mb.scene, mb.index, seeds), config)
    assert torch.equal(in_worker.loss, in_step.loss)
    other = stage.loss(model, Batch(images, mb.caption, mb.scene, mb.index, seeds + 1), config)
    assert not torch.equal(other.loss, in_step.loss)
