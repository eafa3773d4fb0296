"""EmbeddingWriter: an embedding folder written a shard at a time, appearing whole or not at all."""

import pytest
import torch

from unclip.prior.embeddings import EmbeddingWriter, load_embeddings, read_meta

D, L, W = 6, 5, 4


def _batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(L)[None] < torch.randint(1, L + 1, (n, 1), generator=g)
    return torch.randn(n, D, generator=g), torch.randn(n, D, generator=g), torch.randn(n, L, W, generator=g), mask


def test_shards_are_written_as_they_fill_and_the_folder_appears_at_the_end(tmp_path):
    out = tmp_path / "emb"
    batches = [_batch(5, seed) for seed in range(4)]
    with EmbeddingWriter(out, clip="clip-dir", shard_size=8) as w:
        written = []
        for b in batches:
            w.add(*b)
            assert w.pending < 8  # never more than a shard's pairs held in memory
            written.append([s["count"] for s in w.shards])
        assert not out.exists()  # nothing at the destination until the block ends
    assert written == [[], [8], [8], [8, 8]]
    meta = read_meta(out)
    assert [s["count"] for s in meta["shards"]] == [8, 8, 4] and meta["count"] == 20 and meta["clip"] == "clip-dir"
    data = load_embeddings(out)
    z_i, z_t, tokens, mask = (torch.cat(parts) for parts in zip(*batches, strict=True))
    assert torch.equal(data.z_i, z_i) and torch.equal(data.z_t, z_t) and torch.equal(data.mask, mask)
    assert data.tokens.dtype == torch.float16 and torch.equal(data.tokens, tokens.half())
    assert not list(tmp_path.glob(".emb.*"))  # no temporary folder left behind


def test_a_failure_leaves_the_earlier_folder_and_no_temporary_one(tmp_path):
    out = tmp_path / "emb"
    with EmbeddingWriter(out, shard_size=4) as w:
        w.add(*_batch(6, 0))
    before = load_embeddings(out)
    with pytest.raises(RuntimeError, match="stopped"), EmbeddingWriter(out, shard_size=4) as w:
        w.add(*_batch(9, 1))  # two shards written into the temporary folder
        raise RuntimeError("stopped")
    assert torch.equal(load_embeddings(out).z_i, before.z_i) and not list(tmp_path.glob(".emb.*"))
    with EmbeddingWriter(out, shard_size=4) as w:  # an embedding folder is replaced whole on success
        w.add(*_batch(3, 2))
    assert read_meta(out)["count"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "shard_00000.safetensors"]  # no stale shard


def test_bad_writes_are_refused_and_write_nothing(tmp_path):
    foreign = tmp_path / "runs"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not an embedding folder"):
        EmbeddingWriter(foreign)
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]
    (tmp_path / "empty").mkdir()
    with EmbeddingWriter(tmp_path / "empty", shard_size=2) as w:  # an empty folder is fine
        w.add(*_batch(3, 0))
    with pytest.raises(ValueError, match="differ from the earlier batches"), EmbeddingWriter(tmp_path / "a") as w:
        w.add(*_batch(2, 0))
        w.add(torch.zeros(2, D + 1), torch.zeros(2, D + 1), torch.zeros(2, L, W), torch.ones(2, L, dtype=torch.bool))
    with pytest.raises(ValueError, match="no embedding pairs were added"), EmbeddingWriter(tmp_path / "b"):
        pass
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="shard_size must be a positive integer"):
            EmbeddingWriter(tmp_path / "c", shard_size=bad)
    with pytest.raises(RuntimeError, match="context manager"):
        EmbeddingWriter(tmp_path / "d").add(*_batch(1, 0))
