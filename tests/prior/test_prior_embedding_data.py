"""Priors train straight from an embedding folder (`--data embeddings:DIR`): no image is rendered or decoded."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from prior_data import synthetic_pairs
from safetensors.torch import save_file

from unclip.cli.main import main
from unclip.data import loader
from unclip.data.datasets import ShapesSource
from unclip.data.embedding_shards import EmbeddingShards, read_shard
from unclip.data.embedding_source import PositionStream, embeddings_folder
from unclip.data.loader import BatchStream
from unclip.data.shapes.world import ShapesWorld
from unclip.prior.embeddings import EmbeddingSet, _mix, load_embeddings, read_meta, write_embeddings


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


# -- EmbeddingShards: the folder streamed a window of shards at a time -----------------------------------------


def _sharded(tmp_path, n=20, shard_size=8, name="sharded"):
    z_i, z_t, tokens, mask = synthetic_pairs(n)
    return write_embeddings(tmp_path / name, EmbeddingSet(z_i, z_t, tokens, mask), shard_size=shard_size)


class CountingReader:
    """Reads shards like the default reader and tracks, through weak references, how many are alive at once."""

    def __init__(self):
        self.loads, self.alive, self.peak = [], 0, 0

    def __call__(self, path):
        tensors = read_shard(path)
        self.loads.append(path.name)
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        weakref.finalize(tensors["tokens"], self._freed)  # the bulk of a shard; freed when the shard is dropped
        return tensors

    def _freed(self):
        self.alive -= 1


def _epoch_batches(data, world, b, seed, epochs=1):
    """Rows of each rank's micro-batches, in the engine's order, for ``epochs`` epochs."""
    per_rank = {r: [] for r in range(world)}
    steps = -(-len(data) * epochs // (world * b))
    for g in range(steps):
        for rank in range(world):
            stream = PositionStream(ShapesSource(resolution=8), resolution=8, local_batch=b, rank=rank,
                                    world_size=world, seed=seed)  # fmt: skip
            index = stream.micro_batch(g).index
            index = index[index < len(data) * epochs]
            rows = data.rows(index, seed=seed)
            data.batch(rows)
            per_rank[rank].append(rows)
    return {r: torch.cat(v) for r, v in per_rank.items()}


@pytest.mark.parametrize("shards", [1, 3])
def test_a_folder_of_one_window_streams_exactly_the_in_memory_batches(tmp_path, shards):
    """Up to `window` shards the order is EmbeddingSet's full shuffle, draw for draw: same rows, same tensors."""
    folder = _sharded(tmp_path, n=24, shard_size=24 // shards)
    old, new = load_embeddings(folder), EmbeddingShards(folder, window=shards)
    positions = torch.arange(5, 70)  # crosses two epoch boundaries
    rows = new.rows(positions, seed=3)
    assert torch.equal(rows, old.rows(positions, seed=3))
    for a, b in zip(new.batch(rows), old.batch(rows), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert new.dims == old.dims and len(new) == len(old)


@pytest.mark.parametrize("window", [1, 2])
def test_every_pair_once_per_epoch_and_windows_are_contiguous(tmp_path, window):
    folder = _sharded(tmp_path, n=44, shard_size=8)  # 6 shards, the last of 4
    data = EmbeddingShards(folder, window=window)
    rows = data.rows(torch.arange(3 * 44), seed=1).view(3, 44)
    for epoch in rows:
        assert sorted(epoch.tolist()) == list(range(44))
    assert not torch.equal(rows[0], rows[1])  # a fresh order each epoch
    # The epoch is a run of windows: each run holds all rows of `window` shards (the rest at the end) and no other.
    counts = [8, 8, 8, 8, 8, 4]
    shard, i, used = (rows[0] // 8).tolist(), 0, set()
    while i < 44:
        members, j = set(), i
        while len(members) < window and len(used | members) < 6:
            members.add(shard[j])
            j += 1
        span = sum(counts[s] for s in members)
        assert set(shard[i : i + span]) == members, (i, members)
        used, i = used | members, i + span
    assert used == set(range(6))


@pytest.mark.parametrize("shards", [3, 10])
def test_memory_holds_at_most_two_shards_whatever_the_folder_size(tmp_path, shards):
    """Two epochs on two ranks: never more than 2 shards alive, and each shard read about once per epoch."""
    folder = _sharded(tmp_path, n=8 * shards, shard_size=8)
    reader = CountingReader()
    data = EmbeddingShards(folder, reader=reader)
    per_rank = _epoch_batches(data, world=2, b=3, seed=7, epochs=2)
    assert reader.peak == 2 and reader.alive <= 2
    assert len(reader.loads) <= 2 * shards + 1, reader.loads  # no re-reading of a shard within an epoch
    assert sorted(torch.cat(list(per_rank.values())).tolist()) == sorted(list(range(8 * shards)) * 2)


def test_ranks_get_disjoint_rows_that_cover_the_epoch(tmp_path):
    data = EmbeddingShards(_sharded(tmp_path, n=36, shard_size=8))
    per_rank = _epoch_batches(data, world=3, b=4, seed=2)
    sets = [set(v.tolist()) for v in per_rank.values()]
    assert all(len(s) == 12 for s in sets)
    assert set.union(*sets) == set(range(36)) and sum(len(s) for s in sets) == 36


def test_the_order_is_a_function_of_the_seed(tmp_path):
    folder = _sharded(tmp_path, n=40, shard_size=8)
    positions = torch.arange(100)
    a = EmbeddingShards(folder).rows(positions, seed=4)
    assert torch.equal(a, EmbeddingShards(folder).rows(positions, seed=4))  # a fresh reader, a resumed run
    assert torch.equal(a[60:], EmbeddingShards(folder).rows(positions[60:], seed=4))
    assert not torch.equal(a, EmbeddingShards(folder).rows(positions, seed=5))


def test_head_reads_the_first_pairs_across_shards(tmp_path):
    folder = _sharded(tmp_path)
    z_i, z_t = EmbeddingShards(folder).head(13)
    old = load_embeddings(folder)
    assert torch.equal(z_i, old.z_i[:13]) and torch.equal(z_t, old.z_t[:13])
    assert EmbeddingShards(folder).head(100)[0].shape == (20, 16)


def _rewrite_shard(folder, name, **change):
    path = folder / name
    tensors = read_shard(path)
    tensors.update(change)
    save_file({k: v for k, v in tensors.items() if v is not None}, str(path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "shard_00001.safetensors").write_bytes(b"garbage"), "shard_00001.safetensors: unreadable"),
        (lambda f: (f / "shard_00002.safetensors").write_bytes((f / "shard_00002.safetensors").read_bytes()[:-9]),
         "shard_00002.safetensors: unreadable"),
        (lambda f: _rewrite_shard(f, "shard_00001.safetensors", z_t=torch.zeros(8, 12)),
         r"shard_00001.safetensors: z_t has shape \(8, 12\), expected \(8, 16\) \(8 rows and embed_dim 16"),
        (lambda f: _rewrite_shard(f, "shard_00002.safetensors", tokens=torch.zeros(4, 6, 20)),
         r"tokens has shape \(4, 6, 20\), expected \(4, 6, 24\)"),
        (lambda f: _rewrite_shard(f, "shard_00000.safetensors", mask=None),
         "shard_00000.safetensors: missing tensor 'mask'"),
        (lambda f: _rewrite_shard(f, "shard_00000.safetensors", mask=torch.zeros(8, 6)), "mask is F32"),
        (lambda f: (f / "shard_00001.safetensors").unlink(), "shard_00001.safetensors"),
    ],
)  # fmt: skip
def test_a_bad_shard_is_named_at_open(tmp_path, damage, message):
    folder = _sharded(tmp_path)
    damage(folder)
    reader = CountingReader()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        EmbeddingShards(folder, reader=reader)
    assert reader.loads == []  # found from the headers, before any shard was read


def test_a_shard_replaced_after_open_is_named_when_read(tmp_path):
    folder = _sharded(tmp_path)
    data = EmbeddingShards(folder)
    _rewrite_shard(folder, "shard_00000.safetensors", z_i=torch.zeros(8, 3))
    with pytest.raises(ValueError, match=r"shard_00000.safetensors: z_i is \(8, 3\), expected \(8, 16\)"):
        data.batch(torch.tensor([0, 1]))
    with pytest.raises(IndexError, match="outside the folder's 20 pairs"):
        data.batch(torch.tensor([20]))
    with pytest.raises(ValueError, match="window must be a positive number"):
        EmbeddingShards(folder, window=0)


def test_embed_with_worker_processes_writes_the_same_pairs(emb_dir, tmp_path):
    """`unclip embed --workers 2` reads in other processes but keeps the serial run's order and values; a batch
    size that does not divide --n leaves a short last batch, not a lost one."""
    clip = emb_dir.parent / "clip"
    out = tmp_path / "emb"
    args = ["embed", "--model", str(clip), "--data", "shapes", "--n", "24", "--batch-size", "5", "--workers", "2"]
    assert main([*args, "--out", str(out)]) == 0
    serial, parallel = load_embeddings(emb_dir), load_embeddings(out)
    assert len(parallel.z_i) == 24
    for name in ("z_i", "z_t", "tokens", "mask"):
        assert torch.allclose(getattr(parallel, name).float(), getattr(serial, name).float(), atol=1e-5), name


def test_embed_writes_a_shard_at_a_time_with_the_same_pairs(emb_dir, tmp_path, capsys):
    """`--shard-size 10` splits 24 pairs 10 / 10 / 4 and keeps them all; refusals leave what was there."""
    clip = emb_dir.parent / "clip"
    out = tmp_path / "emb"
    args = ["embed", "--model", str(clip), "--data", "shapes", "--n", "24", "--batch-size", "7", "--shard-size", "10"]
    assert main([*args, "--out", str(out)]) == 0
    assert [s["count"] for s in read_meta(out)["shards"]] == [10, 10, 4]
    whole, sharded = load_embeddings(emb_dir), load_embeddings(out)
    for name in ("z_i", "z_t", "tokens", "mask"):
        assert torch.allclose(getattr(sharded, name).float(), getattr(whole, name).float(), atol=1e-5), name
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert main([*args, "--out", str(other)]) == 2
    assert "is not an embedding folder" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
