"""Precomputed CLIP embeddings for prior training: encode a dataset once, train any number of priors on it.

A folder holds ``meta.json`` (format, version, dims, counts, the CLIP it came from) and shards
``shard_00000.safetensors`` ... each with ``z_i`` (N, D) and ``z_t`` (N, D) float32, ``tokens`` (N, L, W) float16
(token states are the bulk of the bytes and need no more precision) and ``mask`` (N, L) uint8. Row r of every
tensor is one (image, caption) pair. Loading checks every shard against the metadata and names what differs;
``read_meta`` checks a folder's metadata and shard files without reading any tensor (for early, cheap errors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

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


def write_embeddings(folder: str | Path, data: EmbeddingSet, shard_size: int = 50_000) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for k, start in enumerate(range(0, len(data), shard_size)):
        sl = slice(start, start + shard_size)
        name = f"shard_{k:05d}.safetensors"
        save_file({"z_i": data.z_i[sl].float().contiguous(), "z_t": data.z_t[sl].float().contiguous(),
                   "tokens": data.tokens[sl].half().contiguous(), "mask": data.mask[sl].to(torch.uint8).contiguous()},
                  str(folder / name))  # fmt: skip
        shards.append({"file": name, "count": int(data.z_i[sl].shape[0])})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "count": len(data), "clip": data.clip,
            **data.dims, "shards": shards}  # fmt: skip
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


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
