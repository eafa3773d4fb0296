"""Sources of captioned images for training: a folder, WebDataset tar shards, Parquet files, or the Shapes world.

Every source yields :class:`Record` s: the raw bytes (or array) of one image with its caption and optional
scene graph, decoded later by the loader so that corrupt files cost nothing until they are needed and are
skipped and counted there. Two kinds of source:

- *random access* (``FolderSource``, ``ShapesSource``): ``get(i)`` for any index, so a sample's place in the
  stream is a pure function of (seed, epoch, position) and resuming is O(1);
- *streaming* (:class:`StreamingSource`: ``ShardSource``, ``caption_tables.ParquetSource``): tar shards
  (img2dataset layout ``KEY.jpg|png`` + ``KEY.txt`` + optional ``KEY.json``) or Parquet row groups read in
  order, so a position is a record count within a per-epoch shard order.

``parse_data_spec`` turns the ``--data`` option into a source:
``shapes`` / ``shapes:split=val,seed=3`` (``relations=0.9``: captions state a relation that often where their scene has
a clear one, instead of 0.35; ``placed=x``: only two-object scenes fit for a placed pair, captioned "a red circle to
the left of a blue square", ``placed=y`` "... above ...", ``placed=xy`` both; ``unclip.data.shapes.placed``),
``folder:PATH[,caption=COLUMN]`` (``.txt`` side files, or a ``metadata.jsonl`` / ``metadata.csv`` table),
``wds:PATH/{000..009}.tar``, ``parquet:PATTERN[,caption=COLUMN][,image=COLUMN]``, or a bare path that is
auto-detected (a folder of images, a folder of ``.tar`` shards, a folder with ``*.parquet`` or ``data/*.parquet``,
a ``.tar`` or ``.parquet`` file, or a brace pattern).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


class CorruptSample(Exception):
    """A record that cannot be turned into a training sample (unreadable image, missing caption...)."""


def caption_text(raw: bytes) -> tuple[str | None, str | None]:
    """(caption, None) for a caption file's bytes, or (None, why not). Captions are UTF-8; a byte-order mark (as
    Windows editors write) is dropped rather than read as a character. Bytes that are not UTF-8 (a Latin-1 or
    Windows-1252 file) make the sample unusable with a reason that says how to fix it, instead of reaching the
    tokenizer as replacement characters."""
    try:
        return raw.decode("utf-8-sig").strip(), None
    except UnicodeDecodeError as err:
        byte = raw[err.start : err.start + 1].hex()
        return None, (
            f"caption is not UTF-8 text (byte 0x{byte} at offset {err.start}); convert the caption files to UTF-8, "
            "e.g. `iconv -f cp1252 -t utf-8`"
        )


@dataclass
class Record:
    key: str
    image: bytes | np.ndarray | None  # encoded file bytes, or an (H, W, 3) uint8 array; None when missing
    caption: str | None
    scene: dict[str, Any] | None = None
    problem: str | None = None  # set when the record is already known to be unusable


@dataclass
class FolderSource:
    """``KEY.png|jpg|jpeg|webp`` + ``KEY.txt`` [+ ``KEY.json``], searched recursively, in sorted key order; or,
    when the folder holds ``metadata.jsonl`` / ``metadata.csv`` (Hugging Face's imagefolder layout), the images
    and captions its rows name, in row order (``unclip.data.caption_tables``)."""

    root: str
    caption_column: str | None = None  # the metadata table's caption column; found by name when None
    keys: list[str] = field(default_factory=list, repr=False)
    images: dict[str, str] = field(default_factory=dict, repr=False)
    captions: dict[str, str | None] = field(default_factory=dict, repr=False)  # from a metadata table

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {self.root!r} does not exist")
        if self._read_metadata(root):
            return
        if self.caption_column is not None:
            raise ValueError(f"data folder {self.root!r}: caption= needs a metadata.jsonl or metadata.csv table")
        for path in root.rglob("*"):
            ext = path.suffix.lower().lstrip(".")
            if ext in IMAGE_EXTS and path.is_file():
                key = str(path.with_suffix("").relative_to(root))
                # Two images under one key would make the caption ambiguous; keep the first in sorted order.
                if key not in self.images or str(path) < self.images[key]:
                    self.images[key] = str(path)
        self.keys = sorted(self.images)
        if not self.keys:
            raise ValueError(f"data folder {self.root!r} holds no images ({', '.join(IMAGE_EXTS)})")
        # Usually the first image has its caption; when none has, say so before any work (a run folder, a model).
        if not any(Path(self.images[k]).with_suffix(".txt").is_file() for k in self.keys):
            raise ValueError(
                f"data folder {self.root!r}: none of its {len(self.keys)} images has a caption; put KEY.txt beside "
                "KEY.png, or a metadata.jsonl / metadata.csv table (file_name, text) in the folder"
            )

    def _read_metadata(self, root: Path) -> bool:
        from unclip.data.caption_tables import read_folder_metadata

        found = read_folder_metadata(root, self.caption_column)
        if found is None:
            return False
        name, rows = found
        missing = []
        for row in rows:
            key = str(Path(row.file_name).with_suffix(""))
            k = 1
            while key in self.images:  # one sample per caption: an image named again gets KEY#1, KEY#2...
                key = f"{Path(row.file_name).with_suffix('')}#{k}"
                k += 1
            path = root / row.file_name
            if not path.is_file():
                missing.append(row.file_name)
            self.keys.append(key)
            self.images[key] = str(path)
            self.captions[key] = row.caption
        if len(missing) == len(rows):
            raise ValueError(f"{name} in {self.root!r} names {len(rows)} images and none exists, e.g. {missing[0]!r}")
        if missing:
            warnings.warn(
                f"{name} in {self.root!r}: {len(missing)} of {len(rows)} named images do not exist "
                f"(e.g. {missing[0]!r}); they are skipped and counted in training",
                stacklevel=3,
            )
        return True

    def size(self) -> int | None:
        """Number of samples; ``None`` for an unlimited source."""
        return len(self.keys)

    def caption(self, i: int) -> str | None:
        """Sample ``i``'s caption without reading its image; None when it has none or it cannot be read."""
        return self._caption(i)[0]

    def _caption(self, i: int) -> tuple[str | None, str | None]:
        """(caption, None), or (None, why there is none)."""
        key = self.keys[i]
        if self.captions:
            caption = self.captions[key]
            return caption, None if caption is not None else "no caption in the metadata table"
        caption_path = Path(self.images[key]).with_suffix(".txt")
        try:
            return caption_text(caption_path.read_bytes())
        except FileNotFoundError:
            return None, "no caption file"
        except OSError as err:
            return None, f"unreadable caption file: {err}"

    def get(self, i: int) -> Record:
        key = self.keys[i]
        image_path = Path(self.images[key])
        try:
            image = image_path.read_bytes()
        except OSError as err:
            return Record(key, None, None, problem=f"unreadable image: {err}")
        base = image_path.with_suffix("")
        caption, problem = self._caption(i)
        if caption is None:
            return Record(key, image, None, problem=problem)
        scene = None
        json_path = base.with_suffix(".json")
        if json_path.is_file():
            try:
                scene = json.loads(json_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                return Record(key, image, caption, problem=f"bad JSON side file: {err}")
        return Record(key, image, caption, scene)


@dataclass
class ShapesSource:
    """The procedural Shapes world, generated on the fly: infinite, and index ``i`` is always the same scene."""

    split: str = "train"
    seed: int = 0
    resolution: int = 64
    relation_rate: float | None = None  # None: the world's own (0.35)
    # Only placed-pair scenes (unclip.data.shapes.placed) along these axes ("x", "y" or "xy"; "" off), each
    # captioned with its relation template: the data of the binding recipe's image stage (docs/clip.md, "Relations").
    placed: str = ""

    def __post_init__(self) -> None:
        self._world: Any = None
        self._check()
        from unclip.data.shapes.placed import AXES

        if self.placed and self.placed not in AXES:
            raise ValueError(f"placed must be one of {', '.join(AXES)} (1: x), got {self.placed!r}")
        if self.placed and self.relation_rate is not None:
            raise ValueError("placed samples have one caption form (the relation template); drop relations=")

    def _check(self) -> None:
        try:
            from unclip.data.shapes import ShapesWorld  # noqa: F401
        except ImportError as err:
            raise ValueError(
                "the Shapes-world data source needs unclip.data.shapes (ShapesWorld), which is not available "
                f"in this installation ({err}); use --data folder:PATH or wds:PATTERN meanwhile"
            ) from err

    def size(self) -> int | None:
        return None  # unlimited: every non-negative index is a sample

    def __getstate__(self) -> dict[str, Any]:
        # The world is rebuilt in each data-loading worker rather than pickled across processes.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._world = None

    def caption(self, i: int) -> str:
        """Sample ``i``'s caption without rendering its image."""
        if self.placed:
            from unclip.data.shapes.placed import placed_sample

            return placed_sample(self._shapes_world(), i, self.placed)[0]
        return self._shapes_world().caption(i)

    def get(self, i: int) -> Record:
        world = self._shapes_world()
        if self.placed:
            from unclip.data.shapes import render
            from unclip.data.shapes.placed import placed_sample

            text, scene = placed_sample(world, i, self.placed)
            image = render(scene, world.resolution)
            return Record(f"shapes-placed-{self.split}-{self.seed}-{i}", image, text, scene.to_json())
        s = world[i]
        return Record(f"shapes-{self.split}-{self.seed}-{i}", np.asarray(s.image), s.caption, s.scene.to_json())

    def _shapes_world(self) -> Any:
        if self._world is None:
            from unclip.data.shapes import ShapesWorld

            # The renderer has a smallest size; smaller stages get a render at that size, resized by the loader.
            try:
                from unclip.data.shapes.render import MIN_RESOLUTION
            except ImportError:
                MIN_RESOLUTION = 1
            size = max(self.resolution, MIN_RESOLUTION)
            rate = {} if self.relation_rate is None else {"relation_rate": self.relation_rate}
            self._world = ShapesWorld(split=self.split, seed=self.seed, resolution=size, **rate)
        return self._world


class StreamingSource:
    """A source read in order, shard by shard (tar files, Parquet row groups): the loader shuffles the shards'
    order per epoch and splits them between processes. Subclasses give ``shards``, ``count`` and ``records``."""

    shards: list[str]

    def count(self, shard: str) -> int:
        raise NotImplementedError

    def records(self, shard: str, read: bool = True) -> Iterator[Record]:
        raise NotImplementedError

    def captions(self, shard: str) -> Iterator[str | None]:
        """The captions of ``records(shard)``, in order; subclasses read them without the images."""
        return (r.caption for r in self.records(shard))


@dataclass
class ShardSource(StreamingSource):
    """WebDataset tar shards in the img2dataset layout, read as a stream of records."""

    shards: list[str]

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("no tar shards given")
        missing = [s for s in self.shards if not os.path.isfile(s)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} tar shard(s) do not exist, e.g. {missing[0]!r}")

    def count(self, shard: str) -> int:
        """Records in a shard, from the tar headers alone (no image bytes are read)."""
        return sum(1 for _ in self.records(shard, read=False))

    def captions(self, shard: str) -> Iterator[str | None]:
        """The captions of the shard's records, reading only their ``.txt`` members."""
        return (r.caption for r in self.records(shard, read=("txt",)))

    def records(self, shard: str, read: bool | tuple[str, ...] = True) -> Iterator[Record]:
        """The shard's records in tar order; a truncated or damaged tar ends its stream at the damage. ``read``:
        every member's bytes, none (``False``: counting), or only those of the named extensions."""
        from webdataset.tariterators import base_plus_ext

        current: str | None = None
        files: dict[str, bytes | None] = {}
        try:
            with tarfile.open(shard, mode="r") as tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    prefix, ext = base_plus_ext(member.name)
                    if prefix is None or os.path.basename(member.name).startswith("__"):
                        continue
                    if prefix != current:
                        if current is not None:
                            yield _shard_record(current, files)
                        current, files = prefix, {}
                    wanted = read if isinstance(read, bool) else ext.lower() in read
                    f = tf.extractfile(member) if wanted else None
                    files[ext.lower()] = f.read() if f is not None else None
        except (tarfile.TarError, OSError, EOFError):
            pass  # damaged shard: keep what was read; the loader counts the shortfall
        if current is not None:
            yield _shard_record(current, files)


def _shard_record(key: str, files: dict[str, bytes | None]) -> Record:
    image_ext = next((e for e in IMAGE_EXTS if e in files), None)
    image = files.get(image_ext) if image_ext else None
    raw_caption = files.get("txt")
    caption, caption_problem = caption_text(raw_caption) if raw_caption is not None else (None, None)
    problem = None if image_ext else "no image file"
    if problem is None and "txt" not in files:
        problem = "no caption file"
    problem = problem or caption_problem
    scene = None
    if files.get("json") is not None:
        try:
            scene = json.loads(files["json"])  # type: ignore[arg-type]
        except ValueError as err:
            problem = f"bad JSON side file: {err}"
    return Record(key, image, caption, scene, problem)


Source = FolderSource | ShapesSource | StreamingSource  # streaming: ShardSource, caption_tables.ParquetSource


def expand_shards(pattern: str) -> list[str]:
    """``PATH/{000..009}.tar`` (brace ranges, as WebDataset writes them) and shell globs, sorted."""
    import braceexpand  # a dependency of webdataset

    out: list[str] = []
    for part in braceexpand.braceexpand(pattern):
        out.extend(sorted(glob.glob(part)) if any(c in part for c in "*?[") else [part])
    return out


def _parse_options(text: str, spec: str) -> dict[str, str]:
    opts = {}
    for item in filter(None, text.split(",")):
        if "=" not in item:
            raise ValueError(f"data spec {spec!r}: option {item!r} must look like name=value")
        k, v = item.split("=", 1)
        opts[k.strip()] = v.strip()
    return opts


def _trailing_options(text: str, spec: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``PATH,name=value,...`` -> (PATH, options): only trailing items named in ``allowed`` are options, so a
    path with a comma in it still reads as a path."""
    opts: dict[str, str] = {}
    while "," in text:
        head, _, item = text.rpartition(",")
        name, eq, value = item.partition("=")
        if not eq or name.strip() not in allowed:
            break
        if not value.strip():
            raise ValueError(f"data spec {spec!r}: option {name.strip()!r} needs a value")
        opts[name.strip()] = value.strip()
        text = head
    return text, opts


def _parquet(text: str, spec: str) -> Source:
    from unclip.data.caption_tables import ParquetSource, expand_parquet

    pattern, opts = _trailing_options(text, spec, ("caption", "image"))
    files = expand_parquet(pattern)
    if not files:
        raise FileNotFoundError(f"data spec {spec!r} matches no .parquet file")
    return ParquetSource(files, opts.get("caption"), opts.get("image"))


def parse_data_spec(spec: str, resolution: int = 64) -> Source:
    """Resolve ``--data``; a spec that matches nothing is an error that names it."""
    if not spec:
        raise ValueError("empty data spec; expected shapes, folder:PATH, wds:PATTERN, parquet:PATTERN or a path")
    kind, _, rest = spec.partition(":")
    if kind == "shapes":
        opts = _parse_options(rest, spec)
        unknown = set(opts) - {"split", "seed", "relations", "placed"}
        if unknown:
            raise ValueError(
                f"data spec {spec!r}: unknown option(s) {sorted(unknown)}; expected split, seed, relations, placed"
            )
        placed = opts.get("placed", "0").lower()
        placed = {"0": "", "false": "", "1": "x", "true": "x"}.get(placed, placed)  # placed=1: the probe's axis
        try:
            seed = int(opts.get("seed", 0))
        except ValueError as err:
            raise ValueError(f"data spec {spec!r}: seed must be an integer") from err
        rate = None
        if "relations" in opts:  # how often a caption states a relation where the scene has a clear one
            try:
                rate = float(opts["relations"])
            except ValueError as err:
                raise ValueError(f"data spec {spec!r}: relations must be a number in [0, 1]") from err
            if not 0 <= rate <= 1:
                raise ValueError(f"data spec {spec!r}: relations must be a number in [0, 1], got {rate}")
        try:
            return ShapesSource(opts.get("split", "train"), seed, resolution, rate, placed)
        except ValueError as err:
            raise ValueError(f"data spec {spec!r}: {err}") from err
    if kind == "folder":
        path, opts = _trailing_options(rest, spec, ("caption",))
        return FolderSource(path, opts.get("caption"))
    if kind == "parquet":
        return _parquet(rest, spec)
    if kind == "wds":
        shards = expand_shards(rest)
        if not shards or not any(os.path.isfile(s) for s in shards):
            raise FileNotFoundError(f"data spec {spec!r} matches no tar shard")
        return ShardSource(shards)
    # Auto-detection of a bare path.
    if os.path.isdir(spec):
        tars = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if tars:
            return ShardSource(tars)
        has_table = any(os.path.isfile(os.path.join(spec, name)) for name in ("metadata.jsonl", "metadata.csv"))
        parquet = glob.glob(os.path.join(spec, "*.parquet")) or glob.glob(os.path.join(spec, "data", "*.parquet"))
        if parquet and not has_table:
            return _parquet(spec, spec)  # a hub snapshot keeps its files under data/
        return FolderSource(spec)
    if spec.endswith(".parquet") or spec.partition(",")[0].endswith(".parquet"):
        return _parquet(spec, spec)
    if spec.endswith(".tar") or "{" in spec or any(c in spec for c in "*?["):
        shards = [s for s in expand_shards(spec) if os.path.isfile(s)]
        if not shards:
            raise FileNotFoundError(f"data spec {spec!r} matches no tar shard")
        return ShardSource(shards)
    raise FileNotFoundError(
        f"data spec {spec!r} matches nothing; expected shapes, folder:PATH, wds:PATTERN, parquet:PATTERN, "
        "a folder, .tar shards or .parquet files"
    )


def decode_image(record: Record) -> np.ndarray:
    """The record's image as (H, W, 3) uint8, or :class:`CorruptSample` saying why not."""
    if record.problem is not None:
        raise CorruptSample(f"{record.key}: {record.problem}")
    if record.image is None:
        raise CorruptSample(f"{record.key}: no image")
    if isinstance(record.image, np.ndarray):
        arr = record.image
    else:
        from PIL import Image

        from unclip.image_modes import to_rgb

        try:
            with Image.open(io.BytesIO(record.image)) as im:
                im.load()
                arr = np.asarray(to_rgb(im))
        except Exception as err:  # PIL raises many types for damaged files
            raise CorruptSample(f"{record.key}: unreadable image ({type(err).__name__})") from err
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or min(arr.shape[:2]) < 1:
        raise CorruptSample(
            f"{record.key}: image has shape {arr.shape} and dtype {arr.dtype}, expected (H, W, 3) uint8"
        )
    return arr
