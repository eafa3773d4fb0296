"""Sources of captioned images for training: a folder, WebDataset tar shards, or the Shapes world.

Every source yields :class:`Record` s: the raw bytes (or array) of one image with its caption and optional
scene graph, decoded later by the loader so that corrupt files cost nothing until they are needed and are
skipped and counted there. Two kinds of source:

- *random access* (``FolderSource``, ``ShapesSource``): ``get(i)`` for any index, so a sample's place in the
  stream is a pure function of (seed, epoch, position) and resuming is O(1);
- *streaming* (``ShardSource``): tar shards read in order (img2dataset layout ``KEY.jpg|png`` + ``KEY.txt`` +
  optional ``KEY.json``), so a position is a record count within a per-epoch shard order.

``parse_data_spec`` turns the ``--data`` option into a source:
``shapes`` / ``shapes:split=val,seed=3`` (``relations=0.9``: captions state a relation that often where their scene has
a clear one, instead of 0.35; ``placed=x``: only two-object scenes fit for a placed pair, captioned "a red circle to
the left of a blue square", ``placed=y`` "... above ...", ``placed=xy`` both; ``unclip.data.shapes.placed``),
``folder:PATH``, ``wds:PATH/{000..009}.tar``, or a bare path that is auto-detected (a folder of images, a folder
of ``.tar`` shards, a ``.tar`` file or a brace pattern).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


class CorruptSample(Exception):
    """A record that cannot be turned into a training sample (unreadable image, missing caption...)."""


@dataclass
class Record:
    key: str
    image: bytes | np.ndarray | None  # encoded file bytes, or an (H, W, 3) uint8 array; None when missing
    caption: str | None
    scene: dict[str, Any] | None = None
    problem: str | None = None  # set when the record is already known to be unusable


@dataclass
class FolderSource:
    """``KEY.png|jpg|jpeg|webp`` + ``KEY.txt`` [+ ``KEY.json``], searched recursively, in sorted key order."""

    root: str
    keys: list[str] = field(default_factory=list, repr=False)
    images: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {self.root!r} does not exist")
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

    def size(self) -> int | None:
        """Number of samples; ``None`` for an unlimited source."""
        return len(self.keys)

    def get(self, i: int) -> Record:
        key = self.keys[i]
        base = Path(self.root) / key
        try:
            image = Path(self.images[key]).read_bytes()
        except OSError as err:
            return Record(key, None, None, problem=f"unreadable image: {err}")
        caption_path = base.with_suffix(".txt")
        if not caption_path.is_file():
            return Record(key, image, None, problem="no caption file")
        caption = caption_path.read_text(encoding="utf-8", errors="replace").strip()
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

    def get(self, i: int) -> Record:
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
        if self.placed:
            from unclip.data.shapes import render
            from unclip.data.shapes.placed import placed_sample

            text, scene = placed_sample(self._world, i, self.placed)
            image = render(scene, self._world.resolution)
            return Record(f"shapes-placed-{self.split}-{self.seed}-{i}", image, text, scene.to_json())
        s = self._world[i]
        return Record(f"shapes-{self.split}-{self.seed}-{i}", np.asarray(s.image), s.caption, s.scene.to_json())


@dataclass
class ShardSource:
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

    def records(self, shard: str, read: bool = True) -> Iterator[Record]:
        """The shard's records in tar order; a truncated or damaged tar ends its stream at the damage."""
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
                    f = tf.extractfile(member) if read else None
                    files[ext.lower()] = f.read() if f is not None else None
        except (tarfile.TarError, OSError, EOFError):
            pass  # damaged shard: keep what was read; the loader counts the shortfall
        if current is not None:
            yield _shard_record(current, files)


def _shard_record(key: str, files: dict[str, bytes | None]) -> Record:
    image_ext = next((e for e in IMAGE_EXTS if e in files), None)
    image = files.get(image_ext) if image_ext else None
    raw_caption = files.get("txt")
    caption = raw_caption.decode("utf-8", errors="replace").strip() if raw_caption is not None else None
    problem = None if image_ext else "no image file"
    if problem is None and "txt" not in files:
        problem = "no caption file"
    scene = None
    if files.get("json") is not None:
        try:
            scene = json.loads(files["json"])  # type: ignore[arg-type]
        except ValueError as err:
            problem = f"bad JSON side file: {err}"
    return Record(key, image, caption, scene, problem)


Source = FolderSource | ShapesSource | ShardSource


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


def parse_data_spec(spec: str, resolution: int = 64) -> Source:
    """Resolve ``--data``; a spec that matches nothing is an error that names it."""
    if not spec:
        raise ValueError("empty data spec; expected shapes, folder:PATH, wds:PATTERN or a path")
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
        return FolderSource(rest)
    if kind == "wds":
        shards = expand_shards(rest)
        if not shards or not any(os.path.isfile(s) for s in shards):
            raise FileNotFoundError(f"data spec {spec!r} matches no tar shard")
        return ShardSource(shards)
    # Auto-detection of a bare path.
    if os.path.isdir(spec):
        tars = sorted(glob.glob(os.path.join(spec, "*.tar")))
        return ShardSource(tars) if tars else FolderSource(spec)
    if spec.endswith(".tar") or "{" in spec or any(c in spec for c in "*?["):
        shards = [s for s in expand_shards(spec) if os.path.isfile(s)]
        if not shards:
            raise FileNotFoundError(f"data spec {spec!r} matches no tar shard")
        return ShardSource(shards)
    raise FileNotFoundError(
        f"data spec {spec!r} matches nothing; expected shapes, folder:PATH, wds:PATTERN, a folder or .tar shards"
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

        try:
            with Image.open(io.BytesIO(record.image)) as im:
                im.load()
                arr = np.asarray(im.convert("RGB"))
        except Exception as err:  # PIL raises many types for damaged files
            raise CorruptSample(f"{record.key}: unreadable image ({type(err).__name__})") from err
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or min(arr.shape[:2]) < 1:
        raise CorruptSample(
            f"{record.key}: image has shape {arr.shape} and dtype {arr.dtype}, expected (H, W, 3) uint8"
        )
    return arr
