"""An embedding folder read a window of shards at a time, so prior training memory does not grow with the data.

``EmbeddingSet`` (``unclip.prior.embeddings``) holds a whole folder in memory; at ViT-B/32 dims a pair is ~120 kB
(77 x 768 token states in float16), so a few million pairs do not fit. ``EmbeddingShards`` reads the same folders
through the same interface (``len``, ``dims``, ``rows``, ``batch``) and keeps at most ``2 * window`` shards
loaded, each read whole (``safetensors.torch.load_file``) when a batch first needs it.

Order. An epoch is a permutation of all rows drawn from (seed, epoch) alone, so every process computes the same
one, positions map to rows without reading a tensor, and a resumed run continues exactly:

1. the shards are shuffled and cut into windows of ``window`` consecutive shards;
2. the rows of each window (its shards in folder order) are shuffled;
3. the epoch is window 0's shuffled rows, then window 1's, and so on.

The engine's micro-batch ``g`` of every rank holds positions near ``g * world * b`` (``PositionStream``), so each
process walks the windows in order and needs one window, two at a boundary: that bounds memory. Every pair is seen
once per epoch and ranks hold disjoint positions, hence disjoint rows. It is not a full shuffle (a batch mixes the
pairs of one window only, so a folder written from a meaningfully ordered source should use small shards or a
larger ``window``); a full shuffle with bounded memory would read every shard for every batch. A folder of at most
``window`` shards is one window and gets exactly ``EmbeddingSet.rows``' full shuffle (same generator and seed), so
small folders (the mini run's 30k pairs are one shard) train exactly as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from unclip.prior.embeddings import _mix, read_meta

# Each tensor's shape after its row count, as meta.json names the sizes, and the dtypes a shard may store.
SHAPES = {"z_i": ("embed_dim",), "z_t": ("embed_dim",), "tokens": ("text_len", "text_width"), "mask": ("text_len",)}
DTYPES = {"z_i": {"F64", "F32", "F16", "BF16"}, "z_t": {"F64", "F32", "F16", "BF16"},
          "tokens": {"F64", "F32", "F16", "BF16"}, "mask": {"U8", "BOOL"}}  # fmt: skip

Reader = Callable[[Path], dict[str, Tensor]]


def read_shard(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))


class EmbeddingShards:
    """The pairs of an embedding folder, loaded a shard at a time; shards are checked (headers only) at open."""

    def __init__(self, folder: str | Path, window: int = 1, *, reader: Reader = read_shard) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive number of shards, got {window!r}")
        self.folder, self.window, self.reader = Path(folder), window, reader
        meta = read_meta(self.folder)  # meta.json, shard files present, counts add up
        self.clip: str = meta.get("clip", "")
        self.dims = {k: int(meta[k]) for k in ("embed_dim", "text_len", "text_width")}
        self.files = [self.folder / s["file"] for s in meta["shards"]]
        self.counts = [int(s["count"]) for s in meta["shards"]]
        for path, count in zip(self.files, self.counts, strict=True):
            self._check_header(path, count)
        self.starts = torch.tensor([0, *self.counts[:-1]]).cumsum(0)  # global row of each shard's first pair
        self._loaded: OrderedDict[int, dict[str, Tensor]] = OrderedDict()  # least recently used first
        self._orders: dict[tuple[int, int], Tensor] = {}

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def resident(self) -> tuple[int, ...]:
        """Indices of the shards held in memory now."""
        return tuple(self._loaded)

    def _expected(self, key: str, count: int) -> tuple[int, ...]:
        return (count, *(self.dims[d] for d in SHAPES[key]))

    def _check_header(self, path: Path, count: int) -> None:
        """Names, shapes and dtypes from the shard's header (no tensor is read) against meta.json."""
        try:
            with safe_open(str(path), framework="pt") as f:
                slices = {k: f.get_slice(k) for k in SHAPES if k in set(f.keys())}
                found = {k: (tuple(sl.get_shape()), sl.get_dtype()) for k, sl in slices.items()}
        except Exception as err:  # safetensors raises its own error type for a damaged or truncated file
            raise ValueError(f"{path}: unreadable shard ({err})") from err
        for key in SHAPES:
            if key not in found:
                raise ValueError(f"{path}: missing tensor {key!r} (a shard holds {sorted(SHAPES)})")
            shape, dtype = found[key]
            if shape != self._expected(key, count):
                sizes = ", ".join(f"{d} {self.dims[d]}" for d in SHAPES[key])
                raise ValueError(f"{path}: {key} has shape {shape}, expected {self._expected(key, count)} "
                                 f"({count} rows and {sizes}, as meta.json says for every shard)")  # fmt: skip
            if dtype not in DTYPES[key]:
                raise ValueError(f"{path}: {key} is {dtype}, expected one of {sorted(DTYPES[key])}")

    # -- order --------------------------------------------------------------------------------------------------

    def rows(self, positions: Tensor, seed: int = 0) -> Tensor:
        """Rows for global stream positions: a pure function of (seed, position); see the module docstring."""
        positions = torch.as_tensor(positions, dtype=torch.long)
        epochs, slots = positions.div(len(self), rounding_mode="floor"), positions.remainder(len(self))
        out = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._order(seed, int(epoch))[slots[sel]]
        return out

    def _order(self, seed: int, epoch: int) -> Tensor:
        # Kept per (seed, epoch) as EmbeddingSet does: a batch spans at most two epochs, and redrawing N per batch
        # would dominate a step once N is large. 8 bytes a pair, against ~1-120 kB a pair of data.
        key = (seed, epoch)
        if key not in self._orders:
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            self._orders[key] = self._draw_order(seed, epoch)
        return self._orders[key]

    def _draw_order(self, seed: int, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(_mix(seed, epoch))
        if len(self.counts) <= self.window:  # one window: EmbeddingSet's full shuffle, draw for draw
            return torch.randperm(len(self), generator=g)
        shard_order = torch.randperm(len(self.counts), generator=g).tolist()
        parts = []
        for w in range(0, len(shard_order), self.window):
            members = sorted(shard_order[w : w + self.window])
            rows = torch.cat([torch.arange(self.counts[s]) + self.starts[s] for s in members])
            parts.append(rows[torch.randperm(len(rows), generator=g)])
        return torch.cat(parts)

    # -- data ---------------------------------------------------------------------------------------------------

    def batch(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(z_i, z_t, tokens, mask) of ``rows`` (float32, float32, float32, bool), as ``EmbeddingSet.batch``."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= len(self)):
            raise IndexError(f"rows {int(rows.min())}..{int(rows.max())} outside the folder's {len(self)} pairs")
        n, d, length, width = len(rows), self.dims["embed_dim"], self.dims["text_len"], self.dims["text_width"]
        z_i, z_t = torch.empty(n, d), torch.empty(n, d)
        tokens, mask = torch.empty(n, length, width), torch.empty(n, length, dtype=torch.bool)
        shard_of = torch.searchsorted(self.starts, rows, right=True) - 1  # right: skips empty shards
        needed = shard_of.unique().tolist()
        for s in needed:
            sel = (shard_of == s).nonzero().squeeze(1)
            local = rows[sel] - self.starts[s]
            t = self._shard(s, keep=needed)
            z_i[sel], z_t[sel] = t["z_i"][local].float(), t["z_t"][local].float()
            tokens[sel], mask[sel] = t["tokens"][local].float(), t["mask"][local].bool()
        return z_i, z_t, tokens, mask

    def _shard(self, s: int, keep: list[int]) -> dict[str, Tensor]:
        if s in self._loaded:
            self._loaded.move_to_end(s)
            return self._loaded[s]
        # Evict before reading, so the peak is the bound and not the bound plus one shard.
        for old in [k for k in self._loaded if k not in keep]:
            if len(self._loaded) < 2 * self.window:
                break
            del self._loaded[old]
        path = self.files[s]
        try:
            tensors = self.reader(path)
        except Exception as err:
            raise ValueError(f"{path}: unreadable shard ({err})") from err
        for key in SHAPES:  # the header was checked at open; this catches a file replaced since
            if key not in tensors or tuple(tensors[key].shape) != self._expected(key, self.counts[s]):
                got = tuple(tensors[key].shape) if key in tensors else "missing"
                raise ValueError(f"{path}: {key} is {got}, expected {self._expected(key, self.counts[s])}")
        self._loaded[s] = tensors
        return tensors

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        """(z_i, z_t) of the first ``n`` pairs in folder order, float32, read by slices (no token states)."""
        empty = torch.empty(0, self.dims["embed_dim"])
        parts: dict[str, list[Tensor]] = {"z_i": [empty], "z_t": [empty]}
        left = min(n, len(self))
        for path, count in zip(self.files, self.counts, strict=True):
            if left <= 0:
                break
            take = min(left, count)
            with safe_open(str(path), framework="pt") as f:
                for key, lst in parts.items():
                    lst.append(f.get_slice(key)[:take].float())
            left -= take
        return torch.cat(parts["z_i"]), torch.cat(parts["z_t"])
