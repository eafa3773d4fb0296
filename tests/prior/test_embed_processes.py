"""`unclip embed` split over torchrun processes: each embeds a contiguous part, the main process merges the parts,
and the folder holds the pairs one process writes, in the same order."""

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from unclip.data.datasets import ShapesSource, ShardSource
from unclip.data.embed import IndexRange, embed_dataset, iter_records, process_part
from unclip.data.shapes.export import write_shards
from unclip.data.shapes.world import ShapesWorld
from unclip.pipeline.sharding import Shard
from unclip.prior.embeddings import EmbeddingSet, load_embeddings, merge_embeddings, read_meta, write_embeddings

REPO = Path(__file__).parents[2]
FIELDS = ("z_i", "z_t", "tokens", "mask")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from unclip.clip import CLIP, PRESETS, make_tokenizer

    folder = tmp_path_factory.mktemp("clip") / "clip"
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).save_pretrained(folder)
    return folder


def test_indexable_parts_are_contiguous_and_concatenate_to_the_whole():
    source = ShapesSource(resolution=32)
    parts = [process_part(source, 10, Shard(r, 3))[0] for r in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 6), (6, 10)]
    captions = [rec.caption for p in parts for rec in iter_records(p, None)]
    assert captions == [rec.caption for rec in iter_records(source, 10)]
    assert process_part(source, 10, Shard()) == (source, 10)  # one process: the source itself
    with pytest.raises(ValueError, match="pass --n"):
        process_part(source, None, Shard(0, 2))
    assert isinstance(parts[0], IndexRange)


def test_streaming_parts_are_whole_shards_and_refuse_a_limit(tmp_path):
    paths = [str(p) for p in write_shards(ShapesWorld(resolution=32), tmp_path, 10, shard_size=2)]  # 5 files
    source = ShardSource(paths)
    parts = [process_part(source, None, Shard(r, 2))[0] for r in range(2)]
    assert [p.shards for p in parts] == [paths[:2], paths[2:]]
    keys = [rec.key for p in parts for rec in iter_records(p, None)]
    assert keys == [rec.key for rec in iter_records(source, None)]
    with pytest.raises(ValueError, match="whole shards"):
        process_part(source, 4, Shard(0, 2))


def _set(n: int, seed: int, dim: int = 8) -> EmbeddingSet:
    g = torch.Generator().manual_seed(seed)
    return EmbeddingSet(torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g),
                        torch.randn(n, 5, 6, generator=g), torch.ones(n, 5, dtype=torch.bool), clip="c")  # fmt: skip


def test_merging_concatenates_rows_in_order_and_refuses_mismatched_parts(tmp_path):
    a, b = write_embeddings(tmp_path / "a", _set(5, 0), shard_size=2), write_embeddings(tmp_path / "b", _set(3, 1))
    merged = load_embeddings(merge_embeddings([a, b], tmp_path / "ab"))
    for name in FIELDS:
        whole = torch.cat([getattr(_set(5, 0), name), getattr(_set(3, 1), name)])
        assert torch.equal(getattr(merged, name).float(), whole.float().to(getattr(merged, name).dtype).float())
    assert [s["count"] for s in read_meta(tmp_path / "ab")["shards"]] == [2, 2, 1, 3]
    assert (a / "meta.json").is_file()  # copied, not moved
    merge_embeddings([a, b], tmp_path / "moved", move=True)
    assert not list(a.glob("*.safetensors")) and len(load_embeddings(tmp_path / "moved")) == 8
    wide = write_embeddings(tmp_path / "wide", _set(2, 2, dim=4))
    with pytest.raises(ValueError, match="embed_dim"):
        merge_embeddings([tmp_path / "ab", wide], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    other = _set(2, 3)
    other.clip = "elsewhere/c"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merge_embeddings([tmp_path / "ab", write_embeddings(tmp_path / "o", other)], tmp_path / "abo")
    assert any("names CLIP" in str(w.message) for w in caught)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an embedding folder"):
        merge_embeddings([tmp_path / "ab"], tmp_path / "notes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "unclip.cli.main", "embed", *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("data", ["shapes", "tar"])
def test_two_processes_write_the_folder_one_process_writes(clip, tmp_path, data):
    if data == "tar":  # 3 files over 2 processes: 1 and 2 files
        write_shards(ShapesWorld(resolution=32), tmp_path / "tar", 15, shard_size=5)
        spec, limit = f"wds:{tmp_path / 'tar'}/shapes-train-{{000000..000002}}.tar", []
    else:
        spec, limit = "shapes", ["--num-pairs", "21"]
    one = embed_dataset(clip, spec, tmp_path / "one", limit=21 if limit else None, batch_size=4, progress=False)[0]
    run = _torchrun("--model", str(clip), "--data", spec, *limit, "--batch-size", "4", "--shard-size", "4",
                    "--out", str(tmp_path / "two"))  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == 1 and "by 2 processes" in run.stdout
    a, b = load_embeddings(one), load_embeddings(tmp_path / "two")
    assert len(b) == len(a) == (21 if limit else 15)
    for name in FIELDS:
        assert torch.allclose(getattr(a, name).float(), getattr(b, name).float(), atol=1e-5), name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no parts left behind
