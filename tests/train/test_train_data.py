import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_stage import make_folder

from unclip.data.datasets import FolderSource, ShapesSource, ShardSource, parse_data_spec
from unclip.data.loader import BatchStream, make_loader, to_training_image


class CountingSource:
    """Wraps a source and counts how often it hands out a record that cannot be decoded."""

    def __init__(self, inner):
        self.inner = inner
        self.corrupt_reads = 0

    def size(self):
        return self.inner.size()

    def get(self, i):
        rec = self.inner.get(i)
        if rec.caption == "broken":
            self.corrupt_reads += 1
        return rec


def _stream(source, b, rank=0, world=1, start=0, seed=0, res=8):
    return BatchStream(source, resolution=res, local_batch=b, rank=rank, world_size=world, seed=seed, start=start)


def test_corrupt_samples_are_skipped_counted_and_refilled(tmp_path):
    src = CountingSource(FolderSource(str(make_folder(tmp_path, n=24, corrupt=2))))
    stream = _stream(src, b=13)
    batches = [stream.micro_batch(g) for g in range(4)]  # two epochs of 26 positions
    assert all(mb.image.shape == (13, 3, 8, 8) for mb in batches)
    assert all("broken" not in c for mb in batches for c in mb.caption)
    assert sum(mb.skipped for mb in batches) == src.corrupt_reads >= 4  # each corrupt file once per epoch at least
    epoch0 = {c for mb in batches[:2] for c in mb.caption}
    assert len(epoch0) >= 22  # a permutation: (nearly) every good sample once per epoch


def test_shuffle_is_deterministic_per_epoch_and_seed(tmp_path):
    src = FolderSource(str(make_folder(tmp_path, n=16)))
    a = [_stream(src, b=16, seed=0).micro_batch(g).caption for g in range(2)]
    b = [_stream(src, b=16, seed=0).micro_batch(g).caption for g in range(2)]
    c = _stream(src, b=16, seed=1).micro_batch(0).caption
    assert a == b
    assert sorted(a[0]) == sorted(a[1]) and a[0] != a[1]  # every epoch is a new permutation of the same samples
    assert c != a[0]


def test_ranks_split_the_global_batch_and_resume_is_positional(tmp_path):
    src = FolderSource(str(make_folder(tmp_path, n=20)))
    for g in (0, 3):
        whole = _stream(src, b=6).micro_batch(g)
        parts = [_stream(src, b=3, rank=r, world=2).micro_batch(g) for r in (0, 1)]
        assert torch.equal(torch.cat([p.image for p in parts]), whole.image)
        assert torch.equal(torch.cat([p.index for p in parts]), whole.index)
        assert torch.equal(torch.cat([p.seed for p in parts]), whole.seed)
    resumed = next(iter(_stream(src, b=6, start=3)))
    assert resumed.g == 3 and torch.equal(resumed.image, _stream(src, b=6).micro_batch(3).image)


def test_workers_deliver_disjoint_batches_in_order(tmp_path):
    src = FolderSource(str(make_folder(tmp_path, n=20)))
    serial = make_loader(_stream(src, b=4, start=2), num_workers=0)
    parallel = make_loader(_stream(src, b=4, start=2), num_workers=2)
    got_s = [mb for mb, _ in zip(serial, range(5), strict=False)]
    got_p = [mb for mb, _ in zip(parallel, range(5), strict=False)]
    assert [mb.g for mb in got_p] == [2, 3, 4, 5, 6]
    for a, b in zip(got_s, got_p, strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.image, b.image)


def _write_shard(path, records, truncate=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for key, files in records:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2] if truncate else data)


def _png(value):
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _shards(tmp_path):
    shards = []
    for s in range(3):
        recs = [(f"{s:03d}{i:04d}", {"png": _png(10 * s + i), "txt": f"s{s} i{i}".encode()}) for i in range(5)]
        if s == 1:
            recs[2] = (recs[2][0], {"png": b"garbage", "txt": b"bad"})  # undecodable image
            recs[3] = (recs[3][0], {"png": _png(1)})  # no caption
            recs[4] = (recs[4][0], {**recs[4][1], "json": b'{"objects": [1]}'})
        path = tmp_path / f"{s:03d}.tar"
        _write_shard(path, recs)
        shards.append(str(path))
    return shards


def test_shard_stream_skips_corrupt_records_and_resumes(tmp_path):
    src = parse_data_spec(f"wds:{tmp_path}/{{000..002}}.tar") if _shards(tmp_path) else None
    assert isinstance(src, ShardSource) and len(src.shards) == 3
    stream = _stream(src, b=5)
    epoch = [stream.micro_batch(g) for g in range(3)]  # 15 records = one epoch
    assert sum(mb.skipped for mb in epoch) == 2
    captions = [c for mb in epoch for c in mb.caption]
    assert "bad" not in captions and len(set(captions)) == 13  # 13 good records, 2 slots refilled
    assert any(s == {"objects": [1]} for mb in epoch for s in mb.scene)
    # Resuming at micro-batch 4 (second epoch) gives what reading straight through gives.
    straight = [stream.micro_batch(g) for g in range(3, 6)]
    resumed = _stream(src, b=5, start=4).micro_batch(4)
    assert torch.equal(resumed.image, straight[1].image) and resumed.caption == straight[1].caption


def test_shard_stream_splits_shards_between_ranks(tmp_path):
    src = ShardSource(_shards(tmp_path))
    seen = [{c for g in range(3) for c in _stream(src, b=2, rank=r, world=2).micro_batch(g).caption} for r in (0, 1)]
    assert seen[0].isdisjoint(seen[1])
    assert {c.split()[0] for c in seen[0]} == {"s0", "s2"} and {c.split()[0] for c in seen[1]} == {"s1"}


def test_truncated_shard_does_not_crash(tmp_path):
    _write_shard(tmp_path / "a.tar", [(f"k{i}", {"png": _png(i), "txt": b"ok"}) for i in range(6)], truncate=True)
    src = parse_data_spec(str(tmp_path / "a.tar"))
    mb = _stream(src, b=2).micro_batch(0)
    assert mb.image.shape == (2, 3, 8, 8) and mb.caption == ["ok", "ok"]


def test_resize_then_centre_crop():
    arr = np.zeros((8, 16, 3), dtype=np.uint8)
    arr[:, :4] = (255, 0, 0)
    arr[:, 4:12] = (0, 255, 0)
    arr[:, 12:] = (0, 0, 255)
    x = to_training_image(arr, 8)
    assert x.shape == (3, 8, 8)
    assert torch.equal(x, torch.tensor([-1.0, 1.0, -1.0])[:, None, None].expand(3, 8, 8))
    big = to_training_image(np.full((40, 30, 3), 255, np.uint8), 16)
    assert big.shape == (3, 16, 16) and torch.allclose(big, torch.ones(3, 16, 16))


def test_data_spec_errors_and_detection(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        parse_data_spec(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="matches no tar shard"):
        parse_data_spec(f"wds:{tmp_path}/{{000..003}}.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        parse_data_spec(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="unknown option"):
        parse_data_spec("shapes:colour=red")
    assert isinstance(parse_data_spec(str(make_folder(tmp_path / "imgs", n=2))), FolderSource)
    _shards(tmp_path / "imgs")
    assert isinstance(parse_data_spec(str(tmp_path / "imgs")), ShardSource)  # tar shards win over loose images


def test_shapes_source_is_infinite_and_deterministic():
    pytest.importorskip("unclip.data.shapes", reason="the Shapes world is not in this checkout yet")
    src = parse_data_spec("shapes:split=train,seed=3", resolution=32)
    assert isinstance(src, ShapesSource) and src.seed == 3
    a = _stream(src, b=2, res=32).micro_batch(10**6)
    b = _stream(src, b=2, res=32).micro_batch(10**6)
    assert torch.equal(a.image, b.image) and a.caption == b.caption and a.scene[0] is not None
    other_rank = _stream(src, b=2, rank=1, world=2, res=32).micro_batch(10**6)
    assert not set(other_rank.index.tolist()) & set(a.index.tolist())
    small = parse_data_spec("shapes", resolution=16)  # below the renderer's minimum: rendered larger, resized
    assert _stream(small, b=1, res=16).micro_batch(0).image.shape == (1, 3, 16, 16)


def test_shapes_relations_option_raises_only_the_relation_captions():
    """``relations=P`` turns captions that stated no relation into ones that do, where the scene has a clear one,
    and leaves every scene and every other caption as it was (one random draw either way)."""
    from unclip.data.shapes import parse_caption

    def relation(text: str) -> bool:
        return parse_caption(text).relation is not None

    base, more = parse_data_spec("shapes:seed=3"), parse_data_spec("shapes:seed=3,relations=0.9")
    same_default = parse_data_spec("shapes:seed=3,relations=0.35")
    assert base.relation_rate is None and more.relation_rate == 0.9
    changed = 0
    for i in range(300):
        a, b = base.get(i), more.get(i)
        assert a.scene == b.scene and np.array_equal(a.image, b.image)
        assert same_default.get(i).caption == a.caption  # 0.35 is the world's own rate
        if relation(a.caption):  # a draw under 0.35 is under 0.9: the same caption
            assert b.caption == a.caption
        elif a.caption != b.caption:
            assert relation(b.caption)  # the only change: a relation stated where none was
            changed += 1
    assert changed > 40  # 113 of these 300
    never = parse_data_spec("shapes:seed=3,relations=0")
    assert not any(relation(never.get(i).caption) for i in range(200))
    for bad in ("shapes:relations=1.5", "shapes:relations=-0.1", "shapes:relations=often"):
        with pytest.raises(ValueError, match="relations must be a number in"):
            parse_data_spec(bad)
