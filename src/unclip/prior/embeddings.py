"""Precomputed CLIP embeddings for prior training: encode a dataset once, train any number of priors on it.

A folder holds ``meta.json`` (format, version, dims, counts, the CLIP it came from) and shards
``shard_00000.safetensors`` ... each with ``z_i`` (N, D) and ``z_t`` (N, D) float32, ``tokens`` (N, L, W) float16
(token states are the bulk of the bytes and need no more precision) and ``mask`` (N, L) uint8. Row r of every
tensor is one (image, caption) pair. Loading checks every shard against the metadata and names what differs;
``read_meta`` checks a folder's metadata and shard files without reading any tensor (for early, cheap errors).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from unclip.atomic import atomic_directory

FORMAT, FORMAT_VERSION, META_FILE = "unclip-embeddings", 1, "meta.json"


def _mix(*parts: int) -> int:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass
class EmbeddingSet:
    z_i: Tensor  # (N, D)
    z_t: Tensor  # (N, D)
    tokens: Tensor  # (N, L, W)
    mask: Tensor  # (N, L) bool
    clip: str = ""
    _perms: dict[tuple[int, int], Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.z_i.shape[0]
        if self.z_i.ndim != 2 or self.z_t.shape != self.z_i.shape:
            raise ValueError(f"z_i {tuple(self.z_i.shape)} and z_t {tuple(self.z_t.shape)} must both be (N, D)")
        if self.tokens.ndim != 3 or self.tokens.shape[0] != n or tuple(self.mask.shape) != tuple(self.tokens.shape[:2]):
            raise ValueError(f"tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} must be (N, L, W), "
                             f"(N, L) with N = {n}")  # fmt: skip
        if n == 0:
            raise ValueError("an embedding set needs at least one pair")
        self.mask = self.mask.bool()

    def __len__(self) -> int:
        return int(self.z_i.shape[0])

    @property
    def dims(self) -> dict[str, int]:
        return {"embed_dim": self.z_i.shape[1], "text_len": self.tokens.shape[1], "text_width": self.tokens.shape[2]}

    def rows(self, positions: Tensor, seed: int = 0) -> Tensor:
        """Rows for global stream positions: a fresh permutation per epoch, a pure function of (seed, position)."""
        n = len(self)
        out = []
        for p in positions.tolist():
            epoch, slot = divmod(int(p), n)
            out.append(int(self._permutation(seed, epoch)[slot]))
        return torch.tensor(out, dtype=torch.long)

    def _permutation(self, seed: int, epoch: int) -> Tensor:
        # Drawn once per (seed, epoch) and kept (a batch spans at most two epochs): one randperm of N per
        # position would cost O(N) per sample, which dominates a training step once N is in the hundreds of
        # thousands.
        key = (seed, epoch)
        if key not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[key] = torch.randperm(len(self), generator=torch.Generator().manual_seed(_mix(seed, epoch)))
        return self._perms[key]

    def batch(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.z_i[rows].float(), self.z_t[rows].float(), self.tokens[rows].float(), self.mask[rows]


def refuse_foreign(folder: Path) -> None:
    """Refuse to write over a non-empty path that is not an embedding folder (an embedding folder is replaced)."""
    occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if occupied and not (folder / META_FILE).is_file():
        raise ValueError(
            f"{str(folder)!r} exists and is not an embedding folder; choose a new or empty one (an embedding "
            "folder there would be replaced)"
        )


SHARD_SIZE = 50_000  # pairs a shard; a writer holds at most one shard's pairs (tokens in float16)


class EmbeddingWriter:
    """Writes an embedding folder shard by shard as pairs arrive, so memory holds one shard, not the dataset.

    Use it as a context manager; ``add`` takes a batch of pairs. The folder appears whole (every shard and
    ``meta.json``) when the block ends without an error, and not at all otherwise (``unclip.atomic``). An existing
    embedding folder at ``folder`` is replaced then; any other non-empty path is refused before anything is written.
    """

    def __init__(self, folder: str | Path, clip: str = "", shard_size: int = SHARD_SIZE) -> None:
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        self.folder, self.clip, self.shard_size = Path(folder), clip, shard_size
        refuse_foreign(self.folder)
        self.shards: list[dict] = []  # written so far: {"file", "count"}
        self.count = 0  # pairs added so far
        self.dims: dict[str, int] | None = None
        self._parts: dict[str, list[Tensor]] = {k: [] for k in ("z_i", "z_t", "tokens", "mask")}
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None

    @property
    def pending(self) -> int:
        """Pairs added but not yet written to a shard (always fewer than ``shard_size`` after ``add``)."""
        return self.count - sum(s["count"] for s in self.shards)

    def __enter__(self) -> EmbeddingWriter:
        self._tmp = self._stack.enter_context(atomic_directory(self.folder))
        return self

    def add(self, z_i: Tensor, z_t: Tensor, tokens: Tensor, mask: Tensor) -> None:
        """Append a batch: ``z_i``, ``z_t`` (n, D), ``tokens`` (n, L, W), ``mask`` (n, L), with the sizes of earlier
        batches. Stored as ``EmbeddingSet`` folders hold them (tokens float16, mask uint8) as soon as they arrive."""
        if self._tmp is None:
            raise RuntimeError("use EmbeddingWriter as a context manager: with EmbeddingWriter(folder) as w: ...")
        batch = EmbeddingSet(z_i.detach().cpu(), z_t.detach().cpu(), tokens.detach().cpu(), mask.detach().cpu())
        if self.dims is not None and batch.dims != self.dims:
            raise ValueError(f"embedding sizes {batch.dims} differ from the earlier batches' {self.dims}")
        self.dims = batch.dims
        self._parts["z_i"].append(batch.z_i.float())
        self._parts["z_t"].append(batch.z_t.float())
        self._parts["tokens"].append(batch.tokens.half())
        self._parts["mask"].append(batch.mask.to(torch.uint8))
        self.count += len(batch)
        while self.pending >= self.shard_size:
            self._write_shard(self.shard_size)

    def _write_shard(self, n: int) -> None:
        joined = {k: torch.cat(v) for k, v in self._parts.items()}
        name = f"shard_{len(self.shards):05d}.safetensors"
        assert self._tmp is not None
        save_file({k: v[:n].contiguous() for k, v in joined.items()}, str(self._tmp / name))
        self.shards.append({"file": name, "count": n})
        self._parts = {k: [v[n:]] if len(v) > n else [] for k, v in joined.items()}

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.count == 0:
                    raise ValueError(f"no embedding pairs were added; nothing written to {str(self.folder)!r}")
                if self.pending:
                    self._write_shard(self.pending)
                assert self._tmp is not None and self.dims is not None
                meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "count": self.count, "clip": self.clip,
                        **self.dims, "shards": self.shards}  # fmt: skip
                (self._tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        except BaseException:
            self._stack.__exit__(*sys.exc_info())  # the temporary folder goes, the old folder stays
            raise
        self._stack.__exit__(exc_type, exc, tb)


def write_embeddings(folder: str | Path, data: EmbeddingSet, shard_size: int = SHARD_SIZE) -> Path:
    """``data`` as an embedding folder (see :class:`EmbeddingWriter`)."""
    with EmbeddingWriter(folder, data.clip, shard_size) as writer:
        writer.add(data.z_i, data.z_t, data.tokens, data.mask)
    return Path(folder)


def merge_embeddings(parts: Sequence[str | Path], out: str | Path, *, move: bool = False) -> Path:
    """One embedding folder holding the rows of ``parts`` in order, as if one writer had added them all.

    Every part must have the same sizes (checked before anything is written; a different CLIP name is a warning).
    Shards are copied, or moved with ``move`` (cheap: a rename on the same disk; the parts are then used up), and
    renumbered; no tensor is read. ``out`` appears whole or not at all; an existing embedding folder there is
    replaced and any other non-empty path refused, as by :class:`EmbeddingWriter`.
    """
    metas = [read_meta(p) for p in parts]
    if not metas:
        raise ValueError("no embedding folders to merge")
    first = metas[0]
    for part, meta in zip(parts, metas, strict=True):
        if meta.get("clip") != first.get("clip"):  # a path: the same CLIP may sit elsewhere on another machine
            warnings.warn(f"{str(part)!r} names CLIP {meta.get('clip')!r}, {str(parts[0])!r} names "
                          f"{first.get('clip')!r}; merged under the first", stacklevel=2)  # fmt: skip
        for key in ("embed_dim", "text_len", "text_width"):
            if meta.get(key) != first.get(key):
                raise ValueError(
                    f"{str(part)!r} has {key} {meta.get(key)!r} but {str(parts[0])!r} has {first.get(key)!r}: "
                    "embeddings of different CLIPs or sizes do not merge"
                )
    out = Path(out)
    refuse_foreign(out)
    shards = []
    with atomic_directory(out) as tmp:
        for part, meta in zip(parts, metas, strict=True):
            for shard in meta["shards"]:
                name = f"shard_{len(shards):05d}.safetensors"
                (shutil.move if move else shutil.copyfile)(str(Path(part) / shard["file"]), str(tmp / name))
                shards.append({"file": name, "count": shard["count"]})
        kept = ("format", "format_version", "clip", "embed_dim", "text_len", "text_width")
        merged = {**{k: first.get(k, "") for k in kept}, "count": sum(m["count"] for m in metas), "shards": shards}
        (tmp / META_FILE).write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return out


def read_meta(folder: str | Path) -> dict:
    """``meta.json`` of an embedding folder, checked (format, version, dims, shard files and counts).

    Reads no tensor, so a wrong folder fails in milliseconds with a message that names the folder and the problem
    (FileNotFoundError for what is missing, ValueError for what is malformed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"embedding folder {str(folder)!r} does not exist (write one with `unclip embed`)")
    path = folder / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not an embedding folder: it has no {META_FILE} "
                                "(write one with `unclip embed`)")  # fmt: skip
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        got = (meta.get("format"), meta.get("format_version")) if isinstance(meta, dict) else (type(meta).__name__,)
        raise ValueError(f"{path}: format/version {got}, expected {FORMAT!r} version {FORMAT_VERSION}")
    for key in ("count", "embed_dim", "text_len", "text_width"):
        if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), int) or meta[key] < 1:
            raise ValueError(f"{path}: {key} must be a positive integer, got {meta.get(key)!r}")
    shards = meta.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ValueError(f"{path}: 'shards' must be a non-empty list, got {shards!r}")
    total = 0
    for shard in shards:
        if (
            not isinstance(shard, dict)
            or not isinstance(shard.get("file"), str)
            or not isinstance(shard.get("count"), int)
        ):
            raise ValueError(f"{path}: each shard must be {{'file': NAME, 'count': N}}, got {shard!r}")
        if not (folder / shard["file"]).is_file():
            raise FileNotFoundError(f"{path} lists shard {shard['file']!r}, which is not in {str(folder)!r}")
        total += shard["count"]
    if total != meta["count"]:
        raise ValueError(f"{path}: count is {meta['count']} but the shards hold {total} rows")
    return meta


def load_embeddings(folder: str | Path) -> EmbeddingSet:
    folder = Path(folder)
    meta = read_meta(folder)
    path = folder / META_FILE
    parts: dict[str, list[Tensor]] = {"z_i": [], "z_t": [], "tokens": [], "mask": []}
    for shard in meta["shards"]:
        try:
            tensors = load_file(str(folder / shard["file"]))
        except Exception as err:  # safetensors raises its own error type for a damaged file
            raise ValueError(f"{folder / shard['file']}: unreadable shard ({err})") from err
        for key, lst in parts.items():
            if key not in tensors:
                raise ValueError(f"{folder / shard['file']}: missing tensor {key!r}")
            if tensors[key].shape[0] != shard["count"]:
                raise ValueError(f"{folder / shard['file']}: {key} has {tensors[key].shape[0]} rows, "
                                 f"meta.json says {shard['count']}")  # fmt: skip
            lst.append(tensors[key])
    try:
        data = EmbeddingSet(*(torch.cat(parts[k]) for k in ("z_i", "z_t", "tokens", "mask")), clip=meta.get("clip", ""))
    except (RuntimeError, ValueError) as err:  # shards of different widths, or tensors of the wrong rank
        raise ValueError(f"{str(folder)!r}: the shards do not form one embedding set ({err})") from err
    for k, v in data.dims.items():
        if meta.get(k) != v:
            raise ValueError(f"{path}: {k} is {meta.get(k)!r} but the shards hold {v}")
    return data
