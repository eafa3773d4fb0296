"""Captions read without their images: the same captions in the same order as the records, and no image read."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from unclip.clip.tokenizer import tokenizer_from_data
from unclip.data.datasets import parse_data_spec
from unclip.data.embed import iter_captions, iter_records


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _same_as_records(spec: str, n=None) -> list:
    captions = list(iter_captions(parse_data_spec(spec), n))
    assert captions == [r.caption for r in iter_records(parse_data_spec(spec), n)]
    return captions


def test_folder_captions_without_reading_an_image(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    for i, key in enumerate(["a", "b", "sub/c"]):
        (plain / f"{key}.png").write_bytes(_png(i))
        if key != "b":
            (plain / f"{key}.txt").write_text(f"  caption {key}\n")
    table = tmp_path / "table"
    table.mkdir()
    for i in range(2):
        (table / f"{i}.png").write_bytes(_png(i))
    rows = [{"file_name": "0.png", "text": "zero"}, {"file_name": "1.png", "text": ["one", "uno"]},
            {"file_name": "0.png", "text": "zero again"}]  # fmt: skip
    (table / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _same_as_records(f"folder:{plain}") == ["caption a", None, "caption sub/c"]
    expected = [r.caption for r in iter_records(parse_data_spec(f"folder:{table}"), None)]
    assert "zero again" in expected
    read_bytes = Path.read_bytes  # captions and tables are read as bytes (then decoded as UTF-8); images must not be
    monkeypatch.setattr(Path, "read_bytes", lambda p: pytest.fail(f"read {p}") if p.suffix == ".png" else read_bytes(p))
    assert list(iter_captions(parse_data_spec(f"folder:{plain}"), None)) == ["caption a", None, "caption sub/c"]
    assert list(iter_captions(parse_data_spec(f"folder:{table}"), 10)) == expected


def test_shapes_captions_without_rendering(monkeypatch):
    expected = {spec: _same_as_records(spec, 6) for spec in ("shapes", "shapes:placed=xy")}
    assert len(set(expected["shapes"])) > 3  # six scenes, several different captions
    import unclip.data.shapes as shapes
    import unclip.data.shapes.world as world

    def no_render(*args, **kwargs):
        raise AssertionError("rendered a scene")

    monkeypatch.setattr(world, "render", no_render)
    monkeypatch.setattr(shapes, "render", no_render)
    for spec, captions in expected.items():
        assert list(iter_captions(parse_data_spec(spec), 6)) == captions


def test_shard_captions_read_only_the_txt_members(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        samples = [("000", {"png": _png(1), "txt": b"first"}), ("001", {"png": _png(2)}),
                   ("002", {"jpg": b"garbage", "txt": b" third ", "json": b"{}"})]  # fmt: skip
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    (tmp_path / "000.tar").write_bytes(buf.getvalue())
    spec = f"wds:{tmp_path}/000.tar"
    assert _same_as_records(spec) == ["first", None, "third"]
    opened = []
    extract = tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda tf, m: opened.append(m.name) or extract(tf, m))
    assert list(iter_captions(parse_data_spec(spec), None)) == ["first", None, "third"]
    assert opened == ["000.txt", "002.txt"]


def test_parquet_captions_read_only_the_caption_column(tmp_path, monkeypatch):
    table = pa.table({"jpg": [_png(0), None, _png(2)], "caption": [["a", "b"], ["c"], None]})
    pq.write_table(table, tmp_path / "0.parquet", row_group_size=2)
    spec = f"parquet:{tmp_path}/0.parquet"
    assert _same_as_records(spec) == ["a", "b", "c", None]
    columns = []
    read = pq.ParquetFile.read_row_group

    def reading(f, group, **kwargs):
        columns.append((group, kwargs.get("columns")))
        return read(f, group, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", reading)
    assert list(iter_captions(parse_data_spec(spec), 3)) == ["a", "b", "c"]  # the limit counts samples
    assert columns == [(0, ["caption"])]  # the first row group holds all three: the second is never opened
    assert list(iter_captions(parse_data_spec(spec), None)) == ["a", "b", "c", None]
    assert columns[1:] == [(0, ["caption"]), (1, ["caption"])]


def test_a_tokenizer_from_data_reads_captions_only(tmp_path, monkeypatch):
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"not an image at all")  # training would skip every one
        (tmp_path / f"{i}.txt").write_text(f"a striped zebra number {i}")
    tok, captions = tokenizer_from_data(f"folder:{tmp_path}", vocab_size=300)
    assert captions == [f"a striped zebra number {i}" for i in range(6)]
    assert len(tok.hf.encode("a striped zebra").ids) < len("a striped zebra")  # merges learned from the captions
    with pytest.raises(ValueError, match="holds token states, not captions"):
        from unclip.data.embedding_source import EmbeddingSource

        EmbeddingSource.caption(None, 0)
