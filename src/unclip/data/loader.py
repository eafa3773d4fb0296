"""Deterministic, resumable batches for training: which sample goes where is a pure function of the step.

The global stream of samples is cut into micro-batches of ``local_batch * world_size`` samples; micro-batch
``g`` is the ``g``-th slice of that stream and process ``rank`` takes its ``rank``-th part. So:

- resuming needs only the number of micro-batches consumed (``start``), whatever the number of workers;
- for random-access sources, a global batch holds the same samples whatever the number of processes, so a
  2-process run can be compared with a 1-process one;
- data-loading worker ``w`` of ``W`` produces micro-batches ``start + w, start + w + W, ...``; PyTorch's
  DataLoader returns workers' outputs round-robin, so they arrive in order and each worker's stream is
  disjoint from every other worker's and rank's.

Random-access sources shuffle with a fresh permutation per epoch, seeded by (seed, epoch). Shard streams
shuffle the shard order per epoch, seeded by (seed, epoch, rank). A corrupt sample is skipped and counted; its
slot is refilled deterministically (the next readable sample of the permutation, or, in a shard stream, a
readable sample of the same batch) so batches keep their size and a run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from unclip.data.datasets import CorruptSample, Record, Source, StreamingSource, decode_image

MAX_CONSECUTIVE_CORRUPT = 1000


class UnusableData(ValueError):
    """So many corrupt samples in a row that the data, not a file or two, is at fault: a user's mistake to report
    in one line, not a bug."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            f"{MAX_CONSECUTIVE_CORRUPT} samples in a row could not be used, the last one for this reason: "
            f"{problems[-1]} (`unclip data check SPEC` reports every problem)"
        )


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser), so nearby inputs give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


def to_training_image(arr: np.ndarray, resolution: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, R, R) float32 in [-1, 1]: resize the short side to R, then crop the centre."""
    h, w = arr.shape[:2]
    if (h, w) != (resolution, resolution):
        from PIL import Image

        scale = resolution / min(h, w)
        nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
        im = Image.fromarray(arr).resize((nw, nh), Image.BICUBIC, reducing_gap=None)
        top, left = (nh - resolution) // 2, (nw - resolution) // 2
        arr = np.asarray(im.crop((left, top, left + resolution, top + resolution)))
    x = torch.tensor(arr).permute(2, 0, 1).float()  # a copy: decoded arrays may be read-only
    return x / 127.5 - 1.0


@dataclass
class MicroBatch:
    """What the loader hands the engine: the batch, its number ``g`` and the samples skipped to make it."""

    g: int
    image: torch.Tensor
    caption: list[str]
    scene: list[dict[str, Any] | None]
    index: torch.Tensor
    seed: torch.Tensor
    skipped: int
    problems: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # the stage's batch_extras of this micro-batch


class BatchStream(IterableDataset):
    def __init__(
        self,
        source: Source,
        *,
        resolution: int,
        local_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
        extras: Callable[[MicroBatch], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.source = source
        self.resolution = resolution
        self.b = local_batch
        self.rank = rank
        self.world = world_size
        self.seed = seed
        self.start = start
        self.extras = extras  # run per micro-batch in the worker that made it (Stage.batch_extras)
        self._perms: dict[int, torch.Tensor] = {}
        self._stream: Iterator[tuple[int, Record]] | None = None
        self._stream_pos = -1

    def __iter__(self) -> Iterator[MicroBatch]:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        g = self.start + w
        while True:
            mb = self.micro_batch(g)
            if self.extras is not None:
                mb.extra = self.extras(mb)
                if "image" in mb.extra:  # the stage's own view of the images (an upsampler's crops) goes to the device
                    mb.image = mb.extra.pop("image")
            yield mb
            g += n

    def micro_batch(self, g: int) -> MicroBatch:
        if isinstance(self.source, StreamingSource):
            return self._stream_batch(g)
        return self._random_access_batch(g)

    # Random access: position p of the global stream -> (epoch, slot in that epoch's permutation).
    def _perm(self, epoch: int, n: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perms[epoch] = torch.randperm(n, generator=gen)
        return self._perms[epoch]

    def _item(self, p: int, attempt: int) -> int:
        n = self.source.size()  # type: ignore[union-attr]
        if n is None:  # infinite source: replacements come from far away in the index space
            return p + attempt * (1 << 40)
        epoch, slot = divmod(p, n)
        return int(self._perm(epoch, n)[(slot + attempt) % n])

    def _random_access_batch(self, g: int) -> MicroBatch:
        first = g * self.b * self.world + self.rank * self.b
        images, captions, scenes, problems = [], [], [], []
        skipped = 0
        positions = list(range(first, first + self.b))
        for p in positions:
            for attempt in range(MAX_CONSECUTIVE_CORRUPT + 1):
                if attempt == MAX_CONSECUTIVE_CORRUPT:
                    raise UnusableData(problems)
                record = self.source.get(self._item(p, attempt))
                try:
                    images.append(to_training_image(decode_image(record), self.resolution))
                except CorruptSample as err:
                    skipped += 1
                    problems.append(str(err))
                    continue
                captions.append(record.caption or "")
                scenes.append(record.scene)
                break
        seeds = [mix_seed(self.seed, 1, p) for p in positions]
        return MicroBatch(
            g,
            torch.stack(images),
            captions,
            scenes,
            torch.tensor(positions),
            torch.tensor(seeds),
            skipped,
            problems[:3],
        )

    # Streaming: this rank's records in order, epoch after epoch.
    def _rank_layout(self) -> tuple[list[str], bool]:
        shards = self.source.shards  # type: ignore[union-attr]
        if len(shards) >= self.world:
            return shards[self.rank :: self.world], False
        return shards, True  # fewer shards than processes: split record by record instead

    def _epoch_records(self, epoch: int, skip: int) -> Iterator[tuple[int, Record]]:
        src: StreamingSource = self.source  # type: ignore[assignment]
        shards, by_record = self._rank_layout()
        if not hasattr(self, "_counts"):
            self._counts = {s: src.count(s) for s in shards}
        order = torch.randperm(len(shards), generator=torch.Generator().manual_seed(mix_seed(self.seed, 2, epoch)))
        i = 0  # record index within this rank's epoch
        j = 0  # record index within the whole epoch (for record-wise splitting)
        for k in order.tolist():
            shard = shards[k]
            c = self._counts[shard]
            mine = len(range((self.rank - j) % self.world, c, self.world)) if by_record else c
            if i + mine <= skip:  # the whole shard lies before the resume point: skip it unread
                i, j = i + mine, j + c
                continue
            for rec in src.records(shard):
                take = not by_record or j % self.world == self.rank
                j += 1
                if take:
                    if i >= skip:
                        yield i, rec
                    i += 1

    def _epoch_length(self) -> int:
        shards, by_record = self._rank_layout()
        if not hasattr(self, "_counts"):
            self._counts = {s: self.source.count(s) for s in shards}  # type: ignore[union-attr]
        total = sum(self._counts.values())
        n = len(range(self.rank, total, self.world)) if by_record else total
        if n == 0:
            raise ValueError(f"the shards hold no records for process {self.rank} of {self.world}")
        return n

    def _next_record(self, q: int) -> Record:
        """Record ``q`` of this rank's infinite stream; reads forward from the last one asked for."""
        n = self._epoch_length()
        if self._stream is None or q <= self._stream_pos or q // n != self._stream_pos // n:
            epoch, skip = divmod(q, n)
            self._stream = self._epoch_records(epoch, skip)
            self._stream_pos = epoch * n + skip - 1
        epoch = q // n
        while True:
            try:
                i, rec = next(self._stream)
            except StopIteration:
                # A shard came up shorter than its header count (damaged after counting): start the next epoch.
                self._stream = self._epoch_records(epoch + 1, 0)
                self._stream_pos = (epoch + 1) * n - 1
                return Record(f"missing-{q}", None, None, problem="record missing from a damaged shard")
            self._stream_pos = epoch * n + i
            if self._stream_pos == q:
                return rec

    def _stream_batch(self, g: int) -> MicroBatch:
        first = g * self.b
        images, captions, scenes, problems, positions = [], [], [], [], []
        skipped = 0
        q = first
        while len(images) < self.b and (q < first + self.b or not images):
            if q - first > MAX_CONSECUTIVE_CORRUPT:
                raise UnusableData(problems)
            record = self._next_record(q)
            q += 1
            try:
                images.append(to_training_image(decode_image(record), self.resolution))
            except CorruptSample as err:
                skipped += 1
                problems.append(str(err))
                continue
            captions.append(record.caption or "")
            scenes.append(record.scene)
            positions.append((q - 1) * self.world + self.rank)
        # Refill the slots of skipped records with readable samples of the same batch (deterministic).
        k = 0
        while len(images) < self.b:
            images.append(images[k])
            captions.append(captions[k])
            scenes.append(scenes[k])
            positions.append(positions[k])
            k += 1
        seeds = [mix_seed(self.seed, 3, p, i) for i, p in enumerate(positions)]
        return MicroBatch(
            g,
            torch.stack(images),
            captions,
            scenes,
            torch.tensor(positions),
            torch.tensor(seeds),
            skipped,
            problems[:3],
        )


def make_loader(stream: BatchStream, num_workers: int = 0) -> DataLoader:
    """An iterator of :class:`MicroBatch` in order ``start, start + 1, ...`` (see the module docstring)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        prefetch_factor=2 if num_workers else None,
        # An explicit generator keeps the loader from drawing its worker seeds from the global RNG, whose
        # state the checkpoint restores: an extra draw on resume would shift every later random number.
        generator=torch.Generator().manual_seed(0),
    )
