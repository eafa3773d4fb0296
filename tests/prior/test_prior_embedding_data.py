"""Priors train straight from an embedding folder (`--data embeddings:DIR`): no image is rendered or decoded."""

from __future__ import annotations

import json

import pytest
import torch
from prior_data import synthetic_pairs

from unclip.cli.main import main
from unclip.data import loader
from unclip.data.datasets import ShapesSource
from unclip.data.embedding_source import PositionStream, embeddings_folder
from unclip.data.loader import BatchStream
from unclip.data.shapes.world import ShapesWorld
from unclip.prior.embeddings import EmbeddingSet, _mix, read_meta, write_embeddings


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    """24 pairs embedded by `unclip embed` with a random tiny CLIP (the tiny prior presets' dims)."""
    from unclip.clip import CLIP, PRESETS, make_tokenizer

    root = tmp_path_factory.mktemp("embedded")
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).save_pretrained(root / "clip")
    assert (
        main(["embed", "--model", str(root / "clip"), "--data", "shapes", "--n", "24", "--out", str(root / "emb")]) == 0
    )
    return root / "emb"


@pytest.fixture
def no_images(monkeypatch):
    """Any rendering, image reading or decoding from here on fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was rendered or decoded for prior training")

    for target, name in ((ShapesWorld, "__getitem__"), (ShapesSource, "get"), (loader, "decode_image"),
                         (loader, "to_training_image")):  # fmt: skip
        monkeypatch.setattr(target, name, refuse)


def _train(stage: str, out, *extra: str) -> int:
    args = ["train", stage, "--preset", "tiny", "--out", str(out), "--no-progress", "--steps", "4",
            "--batch-size", "8", "--set", "train.log_every=1", *extra]  # fmt: skip
    return main(args)


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", ["diffusion_prior", "ar_prior"])
@pytest.mark.parametrize("how", ["data", "model"])
def test_a_prior_trains_from_embeddings_without_images(stage, how, emb_dir, tmp_path, no_images):
    option = ["--data", f"embeddings:{emb_dir}"] if how == "data" else ["--set", f"model.embeddings={emb_dir}"]
    assert _train(stage, tmp_path / "run", *option) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == f"embeddings:{emb_dir}" and config["model"]["embeddings"] == str(emb_dir)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_embeddings_source_takes_the_same_steps_as_the_image_source(emb_dir, tmp_path):
    """Same positions and per-sample seeds as `--data shapes` (which renders and discards): identical losses."""
    assert _train("diffusion_prior", tmp_path / "new", "--data", f"embeddings:{emb_dir}") == 0
    assert _train("diffusion_prior", tmp_path / "old", "--data", "shapes", "--set", f"model.embeddings={emb_dir}") == 0
    assert _losses(tmp_path / "new") == _losses(tmp_path / "old")
    assert len(set(_losses(tmp_path / "new"))) == 4  # the steps differ, so equality is not a coincidence


@pytest.mark.parametrize("world", [1, 2])
def test_position_stream_matches_the_random_access_layout(world):
    for rank in range(world):
        kw = {"resolution": 8, "local_batch": 3, "rank": rank, "world_size": world, "seed": 5}
        images = BatchStream(ShapesSource(resolution=8), **kw)
        positions = PositionStream(ShapesSource(resolution=8), **kw)
        for g in (0, 1, 4):
            a, b = images.micro_batch(g), positions.micro_batch(g)
            assert torch.equal(a.index, b.index) and torch.equal(a.seed, b.seed)
            assert b.image.shape == (3, 3, 0, 0)


def test_cached_epoch_permutations_equal_fresh_ones():
    z_i, z_t, tokens, mask = synthetic_pairs(50)
    data = EmbeddingSet(z_i, z_t, tokens, mask)
    positions = torch.tensor([0, 49, 50, 99, 7, 130, 3, 149, 1])
    expected = [int(torch.randperm(50, generator=torch.Generator().manual_seed(_mix(2, p // 50)))[p % 50])
                for p in positions.tolist()]  # fmt: skip
    assert data.rows(positions, seed=2).tolist() == expected


def _folder(tmp_path, name="emb"):
    z_i, z_t, tokens, mask = synthetic_pairs(20)
    return write_embeddings(tmp_path / name, EmbeddingSet(z_i, z_t, tokens, mask), shard_size=8)


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda f: f / "missing", FileNotFoundError, "does not exist"),
        (lambda f: (f / "meta.json").unlink() or f, FileNotFoundError, "has no meta.json"),
        (lambda f: (f / "meta.json").write_text("{oops") and f, ValueError, "not valid JSON"),
        (lambda f: (f / "shard_00001.safetensors").unlink() or f, FileNotFoundError, "shard_00001.safetensors"),
        (lambda f: (f / "meta.json").write_text(json.dumps({**json.loads((f / "meta.json").read_text()),
                                                           "count": 21})) and f, ValueError, "hold 20 rows"),
    ],
)  # fmt: skip
def test_a_bad_folder_is_named_before_any_tensor_is_read(tmp_path, damage, error, message):
    folder = damage(_folder(tmp_path))
    with pytest.raises(error, match=message):
        read_meta(folder)


def test_bad_embedding_data_gives_one_line_errors(emb_dir, tmp_path, capsys, no_images):
    bad = _folder(tmp_path)
    (bad / "shard_00000.safetensors").write_bytes(b"not a safetensors file")
    cases = [
        (["--data", f"embeddings:{tmp_path / 'nope'}"], "does not exist"),
        (["--data", f"embeddings:{bad}"], "shard_00000.safetensors: unreadable shard"),
        (["--data", f"embeddings:{emb_dir}", "--set", f"model.embeddings={bad}"], "name different folders"),
        (["--data", "embeddings:"], "expected embeddings:DIR"),
        ([], "missing --data"),
    ]
    for k, (option, message) in enumerate(cases):
        assert _train("diffusion_prior", tmp_path / f"run{k}", *option) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / f"run{k}").exists()  # nothing written
    args = ["train", "toy", "--preset", "tiny", "--data", f"embeddings:{emb_dir}", "--out", str(tmp_path / "toy")]
    assert main(args) == 2
    assert "trains on images, not on CLIP embeddings" in capsys.readouterr().err


def test_embeddings_folder_parses_only_its_scheme():
    assert embeddings_folder("embeddings:/a/b") == "/a/b"
    assert embeddings_folder("shapes:split=train") is None and embeddings_folder("/data/emb") is None
