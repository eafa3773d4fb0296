"""Captions kept in tables rather than in one ``.txt`` per image: the two layouts users of the field bring.

- A **folder with a metadata table**, Hugging Face's ``imagefolder`` layout (what diffusers' text-to-image
  training scripts read): ``metadata.jsonl`` or ``metadata.csv`` at the folder's root, one row per
  (image, caption) pair, with a ``file_name`` column relative to the root and a caption column. An image named
  on several rows, or a JSON caption that is a list (COCO's five captions per image), gives one sample per
  caption.
- **Parquet files** with the images inside: a dataset exported from the Hugging Face hub (an ``image`` struct
  column of ``{bytes, path}`` and a ``text`` column) or img2dataset's ``parquet`` output (a ``jpg`` binary
  column and ``caption``). Read as a stream (:class:`ParquetSource`), one row group per shard, so shuffling and
  multi-process splitting work as for WebDataset tars. Needs ``pyarrow`` (in the ``train`` extra).

The caption column is found by name (:data:`CAPTION_COLUMNS`, case-insensitive) unless the spec names it:
``folder:PATH,caption=COLUMN`` or ``parquet:PATTERN,caption=COLUMN,image=COLUMN``.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unclip.data.datasets import Record, StreamingSource

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_COLUMNS = ("text", "caption", "captions", "prompt", "sentence", "txt")
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes")
URL_COLUMNS = ("url", "image_url", "link")


def pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, where: str) -> str:
    """The column holding ``what``: the one the spec names, else the first of ``candidates`` present."""
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{where}: no column {wanted!r}; columns are {list(columns)}")
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    hint = f"{what}=COLUMN" if what != "image" else "image=COLUMN"
    raise ValueError(
        f"{where}: no {what} column (looked for {', '.join(candidates)}); columns are {list(columns)}. "
        f"Name it with ,{hint} after the path"
    )


@dataclass
class MetadataRow:
    file_name: str
    caption: str | None


def read_folder_metadata(root: Path, caption_column: str | None = None) -> tuple[str, list[MetadataRow]] | None:
    """The rows of ``root``'s ``metadata.jsonl`` / ``metadata.csv`` (its name and rows), or None when it has
    neither. A list caption becomes one row per caption; a row without ``file_name`` is an error naming its line."""
    present = [name for name in METADATA_FILES if (root / name).is_file()]
    if not present:
        return None
    if len(present) > 1:
        raise ValueError(f"data folder {str(root)!r} holds both {' and '.join(present)}; keep one")
    path = root / present[0]
    where = str(path)
    table, first_data_line = _read_table(path, where)
    if not table:
        raise ValueError(f"{where} holds no rows")
    columns = list(dict.fromkeys(k for row in table for k in row))
    if "file_name" not in columns:
        raise ValueError(f"{where}: no file_name column (Hugging Face imagefolder layout); columns are {columns}")
    caption_key = pick_column(columns, caption_column, CAPTION_COLUMNS, "caption", where)
    rows: list[MetadataRow] = []
    for i, row in enumerate(table):
        name = row.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}, row {i + first_data_line}: file_name is missing or empty")
        value = row.get(caption_key)
        captions = value if isinstance(value, list) else [value]
        rows.extend(MetadataRow(name.strip(), None if c is None else str(c).strip()) for c in captions)
    return present[0], rows


def _image_bytes(cell: Any, base: str) -> tuple[bytes | None, str | None]:
    """A table cell as encoded image bytes: raw bytes, a ``{bytes, path}`` struct (Hugging Face's Image
    feature), or a path relative to the table's folder. Returns (bytes, problem)."""
    if cell is None:
        return None, "no image in this row"
    if isinstance(cell, bytes | bytearray | memoryview):
        return bytes(cell), None
    path = None
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"]), None
        path = cell.get("path")
    elif isinstance(cell, str):
        path = cell
    if not path:
        return None, f"image cell of type {type(cell).__name__} holds neither bytes nor a path"
    full = path if os.path.isabs(path) else os.path.join(base, path)
    try:
        return Path(full).read_bytes(), None
    except OSError as err:
        return None, f"unreadable image: {err}"


def expand_parquet(pattern: str) -> list[str]:
    """``.parquet`` files of a file, a glob or a folder (searched recursively, as a hub snapshot's ``data/``)."""
    if os.path.isdir(pattern):
        return sorted(str(p) for p in Path(pattern).rglob("*.parquet"))
    if any(c in pattern for c in "*?["):
        return sorted(glob.glob(pattern, recursive=True))
    return [pattern] if os.path.isfile(pattern) else []


def _import_pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ValueError(
            'reading Parquet data needs pyarrow: pip install "unclip[train]" (or pip install pyarrow)'
        ) from err
    return pq


@dataclass
class ParquetSource(StreamingSource):
    """Rows of Parquet files as a stream of records, one row group per shard (``FILE::GROUP``)."""

    files: list[str]
    caption_column: str | None = None
    image_column: str | None = None
    shards: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("no Parquet files given")
        missing = [f for f in self.files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} Parquet file(s) do not exist, e.g. {missing[0]!r}")
        pq = _import_pyarrow()
        import pyarrow as pa

        self._rows: dict[str, int] = {}
        self._list_captions = False
        for path in self.files:
            try:
                meta = pq.ParquetFile(path).metadata
                schema = pq.read_schema(path)
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError...: all mean "not a Parquet file"
                raise ValueError(f"{path!r} is not a readable Parquet file ({type(err).__name__}: {err})") from err
            columns = list(schema.names)
            try:
                image = pick_column(columns, self.image_column, IMAGE_COLUMNS, "image", path)
            except ValueError as err:
                urls = [c for c in columns if c.lower() in URL_COLUMNS]
                if urls and self.image_column is None:
                    raise ValueError(
                        f"{path!r} holds image URLs ({urls[0]!r}), not images, and nothing downloads at run time: "
                        "fetch them first (img2dataset writes WebDataset tars or Parquet with the images inside)"
                    ) from err
                raise
            caption = pick_column(columns, self.caption_column, CAPTION_COLUMNS, "caption", path)
            # The first file fixes the columns; every other must name the same ones.
            self.image_column, self.caption_column = image, caption
            kind = schema.field(caption).type
            self._list_captions = self._list_captions or pa.types.is_list(kind) or pa.types.is_large_list(kind)
            for g in range(meta.num_row_groups):
                shard = f"{path}::{g}"
                self.shards.append(shard)
                self._rows[shard] = meta.row_group(g).num_rows

    @staticmethod
    def _split(shard: str) -> tuple[str, int]:
        path, _, group = shard.rpartition("::")
        return path, int(group)

    def count(self, shard: str) -> int:
        """Samples in a row group: its rows, or its captions when a row holds a list of them."""
        if not self._list_captions:
            return self._rows[shard]
        path, group = self._split(shard)
        pq = _import_pyarrow()
        column = pq.ParquetFile(path).read_row_group(group, columns=[self.caption_column]).column(0)
        return sum(max(1, len(v)) if isinstance(v, list) else 1 for v in column.to_pylist())

    def captions(self, shard: str) -> Iterator[str | None]:
        """The captions of the row group's records, reading only the caption column."""
        path, group = self._split(shard)
        try:
            column = _import_pyarrow().ParquetFile(path).read_row_group(group, columns=[self.caption_column])
        except Exception:  # damaged after opening: as records() does, its samples have no caption
            yield from (None for _ in range(self.count(shard)))
            return
        for value in column.column(0).to_pylist():
            yield from _row_captions(value)

    def records(self, shard: str, read: bool = True) -> Iterator[Record]:
        path, group = self._split(shard)
        pq = _import_pyarrow()
        try:
            table = pq.ParquetFile(path).read_row_group(group, columns=[self.image_column, self.caption_column])
        except Exception as err:  # damaged after opening: the loader counts the shortfall
            for i in range(self.count(shard)):
                yield Record(f"{Path(path).stem}-{group}-{i}", None, None, problem=f"unreadable row group: {err}")
            return
        base = os.path.dirname(path)
        images = table.column(0).to_pylist()
        captions = table.column(1).to_pylist()
        for row, (cell, value) in enumerate(zip(images, captions, strict=True)):
            image, problem = _image_bytes(cell, base)
            for k, caption in enumerate(_row_captions(value)):
                key = f"{Path(path).stem}-{group}-{row}" + (f"#{k}" if k else "")
                if problem is None and caption is None:
                    yield Record(key, image, None, problem="no caption in this row")
                else:
                    yield Record(key, image, caption, None, problem)


def _row_captions(value: Any) -> list[str | None]:
    """A caption cell's samples: one per caption of a list cell (an empty list is one sample with none)."""
    texts = (value or [None]) if isinstance(value, list) else [value]
    return [None if text is None else str(text).strip() for text in texts]


def _read_table(path: Path, where: str) -> tuple[list[dict[str, Any]], int]:
    """A metadata table's rows and the line number of its first row. UTF-8, with or without the byte-order mark
    that spreadsheet programs write (read as part of the first column's name, it would hide ``file_name``); in any
    other encoding, an error naming the line where the bytes stop being UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{where} is not UTF-8 text (byte 0x{raw[err.start : err.start + 1].hex()} on line {line}); "
                         "save it as UTF-8, e.g. `iconv -f cp1252 -t utf-8`") from None  # fmt: skip
    if path.suffix != ".jsonl":
        return list(csv.DictReader(io.StringIO(text, newline=""))), 2  # data starts after the header
    table: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{where}, line {line_no}: not JSON ({err})") from err
        if not isinstance(row, dict):
            raise ValueError(f"{where}, line {line_no}: expected a JSON object, got {type(row).__name__}")
        table.append(row)
    return table, 1
