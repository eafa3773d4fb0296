"""The whole training chain, from nothing to a generated image, on tiny presets and 2 steps per stage.

train clip → export → embed → train prior → export → train decoder (on the CLIP) → export → train upsampler →
export → assemble → generate. This is the path that re-creates a model stack; each step is a CLI command.
"""

import json

import pytest
import torch
from PIL import Image

from unclip.cli.main import main


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(*args):
    assert main(list(args)) == 0, args


def test_from_nothing_to_an_image(tmp_path):
    r, m = tmp_path / "runs", tmp_path / "models"
    short = ["--steps", "2", "--batch-size", "4", "--no-progress", "--set", "train.checkpoint_every=2"]
    run("train", "clip", "--preset", "tiny", "--data", "shapes", "--out", str(r / "clip"), *short)
    run("export", str(r / "clip"), "--out", str(m / "clip"))
    run(
        "embed", "--model", str(m / "clip"), "--data", "shapes:split=train", "--n", "16", "--out", str(tmp_path / "emb")
    )
    meta = json.loads((tmp_path / "emb" / "meta.json").read_text())
    assert meta["count"] == 16 and meta["embed_dim"] == 32
    run("train", "diffusion_prior", "--preset", "tiny", "--data", "shapes", "--out", str(r / "prior"), *short,
        "--set", f"model.embeddings={tmp_path / 'emb'}")  # fmt: skip
    run("export", str(r / "prior"), "--out", str(m / "prior"))
    run(
        "train",
        "decoder",
        "--preset",
        "tiny",
        "--data",
        "shapes",
        "--clip",
        str(m / "clip"),
        "--out",
        str(r / "dec"),
        *short,
    )
    run("export", str(r / "dec"), "--out", str(m / "decoder"))
    # The tiny decoder draws 32 px; a ×4 upsampler to 128 px trains on 32 px crops.
    run("train", "upsampler", "--preset", "tiny", "--data", "shapes", "--out", str(r / "up"), *short,
        "--set", "model.upsampler.resolution=128", "--set", "model.sample_steps=2")  # fmt: skip
    run("export", str(r / "up"), "--out", str(m / "up"))
    run("assemble", "--clip", str(m / "clip"), "--prior", str(m / "prior"), "--decoder", str(m / "decoder"),
        "--upsampler", str(m / "up"), "--out", str(tmp_path / "stack"),
        "--set", "prior_steps=2", "--set", "decoder_steps=2", "--set", "upsampler_steps=2")  # fmt: skip
    run("generate", "a red circle", "--n", "2", "--model", str(tmp_path / "stack"), "--out", str(tmp_path / "out"))
    assert Image.open(tmp_path / "out" / "image_001.png").size == (128, 128)
    settings = json.loads((tmp_path / "stack" / "pipeline.json").read_text())["settings"]
    assert settings["decoder_steps"] == 2


def test_export_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "not a run folder" in capsys.readouterr().err
