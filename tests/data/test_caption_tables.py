"""Captions in tables: Hugging Face imagefolder metadata and Parquet files with the images inside."""

import io
import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from unclip.data.caption_tables import ParquetSource
from unclip.data.datasets import FolderSource, decode_image, parse_data_spec
from unclip.data.loader import BatchStream


def _colour(i: int) -> np.ndarray:
    """A 6x5 image whose pixels say which sample it is."""
    return np.full((6, 5, 3), (i * 37 % 256, i * 11 % 256, 200 - i), dtype=np.uint8)


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_colour(i)).save(buf, format="PNG")
    return buf.getvalue()


def _stream(source, b, rank=0, world=1, start=0):
    return BatchStream(source, resolution=8, local_batch=b, rank=rank, world_size=world, seed=0, start=start)


def _image_folder(root, n=4):
    (root / "train").mkdir(parents=True)
    for i in range(n):
        (root / "train" / f"{i}.png").write_bytes(_png(i))
    return root


# Folder + metadata table (Hugging Face imagefolder) -------------------------------------------------------------


def test_jsonl_metadata_gives_one_sample_per_caption_in_row_order(tmp_path):
    root = _image_folder(tmp_path / "d")
    rows = [
        {"file_name": "train/2.png", "text": "two"},
        {"file_name": "train/0.png", "text": ["zero a", "zero b"]},  # COCO-style: two samples of one image
        {"file_name": "train/2.png", "text": "two again"},  # named again: another sample of the same image
        {"file_name": "train/1.png", "text": None},  # no caption: skipped and counted by the loader
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (root / "train" / "2.json").write_text('{"objects": [2]}')  # a scene side file is still read
    src = parse_data_spec(str(root))
    assert isinstance(src, FolderSource) and src.size() == 5
    assert src.keys == ["train/2", "train/0", "train/0#1", "train/2#1", "train/1"]
    records = [src.get(i) for i in range(5)]
    assert [r.caption for r in records] == ["two", "zero a", "zero b", "two again", None]
    assert np.array_equal(decode_image(records[0]), _colour(2)) and np.array_equal(decode_image(records[2]), _colour(0))
    assert records[3].scene == {"objects": [2]} and records[1].scene is None
    assert records[4].problem == "no caption in the metadata table"


def test_csv_metadata_with_a_named_caption_column(tmp_path):
    root = _image_folder(tmp_path / "d", n=3)
    (root / "metadata.csv").write_text(
        'file_name,text,description\ntrain/0.png,ignored,"red, round"\ntrain/1.png,ignored,blue\n'
    )
    src = parse_data_spec(f"folder:{root},caption=description")
    assert [src.get(i).caption for i in range(src.size())] == ["red, round", "blue"]
    # Without the option the first known name wins ("text" before anything else).
    assert FolderSource(str(root)).get(0).caption == "ignored"


def test_metadata_errors_name_the_file_and_what_is_wrong(tmp_path):
    root = _image_folder(tmp_path / "d", n=2)
    (root / "metadata.csv").write_text("path,text\ntrain/0.png,a\n")
    with pytest.raises(ValueError, match=r"metadata.csv'?: no file_name column .*columns are \['path', 'text'\]"):
        FolderSource(str(root))
    (root / "metadata.csv").write_text("file_name,label\ntrain/0.png,a\n")
    with pytest.raises(ValueError, match=r"no caption column \(looked for text, caption.*,caption=COLUMN"):
        FolderSource(str(root))
    with pytest.raises(ValueError, match=r"no column 'words'; columns are \['file_name', 'label'\]"):
        parse_data_spec(f"folder:{root},caption=words")
    (root / "metadata.jsonl").write_text('{"file_name": "train/0.png", "text": "a"}\n')
    with pytest.raises(ValueError, match=r"holds both metadata\.jsonl and metadata\.csv"):
        FolderSource(str(root))
    (root / "metadata.csv").unlink()
    (root / "metadata.jsonl").write_text('{"file_name": "train/0.png", "text": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2: expected a JSON object, got list"):
        FolderSource(str(root))
    (root / "metadata.jsonl").write_text('{"file_name": "gone.png", "text": "a"}\n')
    with pytest.raises(ValueError, match=r"names 1 images and none exists, e\.g\. 'gone\.png'"):
        FolderSource(str(root))
    (root / "metadata.jsonl").unlink()
    with pytest.raises(ValueError, match=r"caption= needs a metadata\.jsonl or metadata\.csv table"):
        parse_data_spec(f"folder:{root},caption=text")


def test_tables_from_spreadsheets_with_a_byte_order_mark_and_tables_not_in_utf8(tmp_path):
    root = _image_folder(tmp_path / "d", n=2)
    # Excel's "CSV UTF-8" starts with a BOM; read as text it would rename the first column "\ufefffile_name".
    (root / "metadata.csv").write_bytes("file_name,text\ntrain/0.png,café\n".encode("utf-8-sig"))
    assert FolderSource(str(root)).get(0).caption == "café"
    (root / "metadata.csv").write_bytes("file_name,text\ntrain/0.png,café\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"metadata\.csv is not UTF-8 text \(byte 0xe9 on line 2\); save it as"):
        FolderSource(str(root))


def test_caption_files_not_in_utf8_are_skipped_with_their_reason(tmp_path):
    root = _image_folder(tmp_path / "d", n=3)
    (root / "train" / "0.txt").write_bytes("a café".encode("cp1252"))  # Latin-1 / Windows-1252: not UTF-8
    (root / "train" / "1.txt").write_bytes("a café".encode("utf-8-sig"))  # a BOM is dropped, not kept as a char
    (root / "train" / "2.txt").write_bytes(b"plain")
    src = FolderSource(str(root))
    bad, bom, plain = (src.get(i) for i in range(3))
    assert bad.caption is None and bad.problem.startswith("caption is not UTF-8 text (byte 0xe9 at offset 5)")
    assert "iconv" in bad.problem and src.caption(0) is None
    assert bom.caption == "a café" and bom.problem is None and src.caption(1) == "a café"
    assert plain.caption == "plain"
    mb = next(iter(_stream(src, 3)))  # one epoch: the loader meets the bad one, skips it and counts it
    assert mb.skipped >= 1 and "caption is not UTF-8" in mb.problems[0] and set(mb.caption) <= {"a café", "plain"}


def test_missing_images_warn_once_and_are_skipped_in_training(tmp_path):
    root = _image_folder(tmp_path / "d", n=3)
    rows = [{"file_name": f"train/{i}.png", "text": f"c{i}"} for i in (0, 1, 7, 2)]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.warns(UserWarning, match=r"1 of 4 named images do not exist \(e.g. 'train/7.png'\)"):
        src = FolderSource(str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epoch = [_stream(src, b=2).micro_batch(g) for g in range(2)]
    assert sum(mb.skipped for mb in epoch) == 1
    assert {c for mb in epoch for c in mb.caption} == {"c0", "c1", "c2"}


# Parquet ----------------------------------------------------------------------------------------------------------


def _hub_table(indices, captions=None):
    """Hugging Face's export layout: an ``image`` struct of {bytes, path} and a ``text`` column."""
    images = [{"bytes": _png(i), "path": f"{i}.png"} for i in indices]
    return pa.table({"image": images, "text": captions or [f"caption {i}" for i in indices]})


def test_hub_parquet_streams_row_groups_as_shards_and_resumes(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(_hub_table(range(6)), tmp_path / "data" / "train-00000-of-00002.parquet", row_group_size=3)
    pq.write_table(_hub_table(range(6, 10)), tmp_path / "data" / "train-00001-of-00002.parquet", row_group_size=2)
    src = parse_data_spec(str(tmp_path))  # a hub snapshot: found under data/
    assert isinstance(src, ParquetSource) and (src.image_column, src.caption_column) == ("image", "text")
    assert len(src.shards) == 4 and [src.count(s) for s in src.shards] == [3, 3, 2, 2]
    records = [r for s in src.shards for r in src.records(s)]
    assert [r.caption for r in records] == [f"caption {i}" for i in range(10)]
    for i in (0, 4, 9):
        assert np.array_equal(decode_image(records[i]), _colour(i))
    stream = _stream(src, b=5)
    epoch = [stream.micro_batch(g) for g in range(2)]
    assert sorted(c for mb in epoch for c in mb.caption) == sorted(f"caption {i}" for i in range(10))
    straight = [stream.micro_batch(g) for g in range(2, 4)]
    resumed = _stream(src, b=5, start=3).micro_batch(3)
    assert torch.equal(resumed.image, straight[1].image) and resumed.caption == straight[1].caption
    # Two processes take disjoint row groups.
    seen = [{c for g in range(2) for c in _stream(src, b=2, rank=r, world=2).micro_batch(g).caption} for r in (0, 1)]
    assert seen[0].isdisjoint(seen[1])


def test_img2dataset_parquet_with_binary_images_lists_and_bad_rows(tmp_path):
    table = pa.table(
        {
            "key": ["000", "001", "002", "003"],
            "jpg": [_png(0), b"not an image", None, _png(3)],
            "caption": [["first", "second"], ["broken"], ["no image"], None],
        }
    )
    path = tmp_path / "00000.parquet"
    pq.write_table(table, path)
    src = parse_data_spec(f"parquet:{path}")
    assert (src.image_column, src.caption_column) == ("jpg", "caption")
    assert src.count(src.shards[0]) == 5  # a list gives one sample per caption
    records = list(src.records(src.shards[0]))
    assert [r.caption for r in records] == ["first", "second", "broken", "no image", None]
    assert records[1].key.endswith("#1") and np.array_equal(decode_image(records[1]), _colour(0))
    assert records[3].problem == "no image in this row" and records[4].problem == "no caption in this row"
    mb = _stream(src, b=5).micro_batch(0)
    assert mb.skipped == 3 and set(mb.caption) == {"first", "second"}


def test_parquet_columns_by_name_and_images_by_path(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png(5))
    table = pa.table({"picture": [{"bytes": None, "path": "imgs/a.png"}], "alt": ["a path"], "text": ["other"]})
    pq.write_table(table, tmp_path / "t.parquet")
    src = parse_data_spec(f"{tmp_path / 't.parquet'},caption=alt,image=picture")
    record = next(src.records(src.shards[0]))
    assert record.caption == "a path" and np.array_equal(decode_image(record), _colour(5))


def test_parquet_errors_say_what_to_do(tmp_path):
    pq.write_table(pa.table({"url": ["http://x/1.jpg"], "caption": ["c"]}), tmp_path / "laion.parquet")
    with pytest.raises(ValueError, match="holds image URLs \\('url'\\), not images, and nothing downloads"):
        parse_data_spec(str(tmp_path / "laion.parquet"))
    pq.write_table(pa.table({"image": [_png(0)], "label": [3]}), tmp_path / "labels.parquet")
    with pytest.raises(ValueError, match=r"no caption column .*columns are \['image', 'label'\]"):
        parse_data_spec(f"parquet:{tmp_path / 'labels.parquet'}")
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(ValueError, match=r"'.*fake\.parquet' is not a readable Parquet file"):
        parse_data_spec(f"parquet:{tmp_path / 'fake.parquet'}")
    with pytest.raises(FileNotFoundError, match=r"matches no \.parquet file"):
        parse_data_spec(f"parquet:{tmp_path / 'none'}/*.parquet")
    pq.write_table(pa.table({"jpg": [_png(0)], "text": ["c"]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="no column 'image'"):  # every file must hold the first file's columns
        ParquetSource([str(tmp_path / "labels.parquet"), str(tmp_path / "other.parquet")], caption_column="label")


def test_training_reads_parquet_end_to_end(tmp_path):
    """A few CLIP steps from a hub-style Parquet file, through the CLI."""
    from unclip.cli.main import main
    from unclip.data.shapes import ShapesWorld

    world = ShapesWorld(split="train", seed=0, resolution=32)
    rows = [world[i] for i in range(12)]
    buffers = []
    for s in rows:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(s.image)).save(buf, format="PNG")
        buffers.append({"bytes": buf.getvalue(), "path": None})
    pq.write_table(pa.table({"image": buffers, "text": [s.caption for s in rows]}), tmp_path / "shapes.parquet")
    out = tmp_path / "run"
    argv = ["train", "clip", "--preset", "tiny", "--data", str(tmp_path / "shapes.parquet"), "--out", str(out)]
    argv += ["--steps", "2", "--batch-size", "4", "--no-progress"]
    assert main(argv) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics][-1] == 2 and all(np.isfinite(m["loss"]) for m in metrics)
    assert json.loads((out / "config.json").read_text())["data"] == str(tmp_path / "shapes.parquet")
