"""``unclip embed``: CLIP embeddings of a dataset, computed once and stored for prior training (§2.2).

For each (image, caption) pair: z_i from the image encoder, z_t and the token states and mask from the text
encoder, written as an embedding folder (``unclip.prior.embeddings``) that records which CLIP made it.
Unreadable samples are skipped and counted, like everywhere else.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unclip.data.datasets import CorruptSample, Record, Source, StreamingSource, decode_image, parse_data_spec
from unclip.data.loader import to_training_image
from unclip.pipeline.sharding import Shard


def iter_records(source: Source, limit: int | None) -> Iterator[Record]:
    """Records in the source's own order, at most ``limit`` (required for the unlimited Shapes world)."""
    return _in_order(source, limit, lambda shard: source.records(shard), lambda i: source.get(i))


def iter_captions(source: Source, limit: int | None) -> Iterator[str | None]:
    """The captions of :func:`iter_records`, one per record in the same order, read without the images (a
    tokenizer's or a caption statistic's input: no image bytes are read or decoded, no Shapes-world scene is
    rendered). A record whose image is missing or unreadable still gives its caption here, as nothing checks the
    image; one without a caption gives None."""
    return _in_order(source, limit, lambda shard: source.captions(shard), lambda i: source.caption(i))


def _in_order(source: Source, limit: int | None, per_shard, per_index) -> Iterator:
    if isinstance(source, StreamingSource):
        count = 0
        for shard in source.shards:
            if limit is not None and count >= limit:
                return  # before the next shard is opened
            for item in per_shard(shard):
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
        return
    for i in range(_record_count(source, limit)):
        yield per_index(i)


def _record_count(source: Source, limit: int | None) -> int:
    """How many records an indexable source gives under ``limit`` (required when the source is unlimited)."""
    size = source.size()
    if size is None and limit is None:
        raise ValueError("this data source is unlimited (Shapes world): pass --n")
    return size if limit is None else (limit if size is None else min(size, limit))


def training_pair(record: Record, image_size: int) -> tuple[torch.Tensor, str] | None:
    """The record's image as a training tensor and its caption, or None when it does not decode or has no
    caption (the caller counts it as skipped)."""
    try:
        arr = decode_image(record)
    except CorruptSample:
        return None
    if not record.caption or not record.caption.strip():
        return None
    return to_training_image(arr, image_size), record.caption


class PairBatches:
    """Batches of (images, captions) from a source's records, for encoders that run once over a dataset.

    Images are resized and centre-cropped to ``image_size`` in [-1, 1] (``to_training_image``), as for training;
    records that do not decode or have no caption are skipped and counted in ``skipped``.
    """

    def __init__(
        self, source: Source, limit: int | None, image_size: int, batch_size: int, *, progress: bool = False,
        desc: str = "embed", workers: int = 0,
    ) -> None:  # fmt: skip
        self.source, self.limit, self.image_size, self.batch_size = source, limit, image_size, batch_size
        self.progress, self.desc, self.workers = progress, desc, workers
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        if self.workers and not isinstance(self.source, StreamingSource):
            yield from self._parallel()
            return
        images: list[torch.Tensor] = []
        captions: list[str] = []
        total = self.limit if self.limit is not None or isinstance(self.source, StreamingSource) else self.source.size()
        records = iter_records(self.source, self.limit)
        for record in tqdm(records, total=total, desc=self.desc, disable=not self.progress):
            pair = training_pair(record, self.image_size)
            if pair is None:
                self.skipped += 1
                continue
            images.append(pair[0])
            captions.append(pair[1])
            if len(images) == self.batch_size:
                yield torch.stack(images), captions
                images, captions = [], []
        if images:
            yield torch.stack(images), captions

    def _parallel(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        """The same batches, in the same order, with records read and decoded by ``workers`` processes (a
        rendered Shapes world or a folder of files is indexable; tar shards are a stream and stay serial)."""
        n = _record_count(self.source, self.limit)
        starts = list(range(0, n, self.batch_size))
        reader = _ChunkReader(self.source, self.image_size, self.batch_size, n)
        loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=self.workers, sampler=starts)
        with tqdm(total=n, desc=self.desc, disable=not self.progress) as bar:
            for images, captions, skipped in loader:
                self.skipped += skipped
                bar.update(len(captions) + skipped)
                if captions:
                    yield images, captions


class _ChunkReader(torch.utils.data.Dataset):
    """Records ``start .. start + batch_size`` (below ``n``) as (images, captions, skipped) for one worker."""

    def __init__(self, source: Source, image_size: int, batch_size: int, n: int) -> None:
        self.source, self.image_size, self.batch_size, self.n = source, image_size, batch_size, n

    def __getitem__(self, start: int) -> tuple[torch.Tensor, list[str], int]:
        images, captions, skipped = [], [], 0
        for i in range(start, min(start + self.batch_size, self.n)):
            pair = training_pair(self.source.get(i), self.image_size)
            if pair is None:
                skipped += 1
                continue
            images.append(pair[0])
            captions.append(pair[1])
        empty = torch.zeros(0, 3, self.image_size, self.image_size)
        return (torch.stack(images) if images else empty), captions, skipped


@dataclass
class IndexRange:
    """Records ``start .. stop`` of an indexable source, as a source of their own (one process's part)."""

    source: Source
    start: int
    stop: int

    def size(self) -> int:
        return self.stop - self.start

    def get(self, i: int) -> Record:
        return self.source.get(self.start + i)

    def caption(self, i: int) -> str | None:
        return self.source.caption(self.start + i)


class ShardSubset(StreamingSource):
    """Some of a streaming source's shards (tar files, Parquet files), read as the source reads them."""

    def __init__(self, source: StreamingSource, shards: list[str]) -> None:
        self.source, self.shards = source, shards

    def count(self, shard: str) -> int:
        return self.source.count(shard)

    def records(self, shard: str, read: bool = True) -> Iterator[Record]:
        return self.source.records(shard, read)

    def captions(self, shard: str) -> Iterator[str | None]:
        return self.source.captions(shard)


def process_part(source: Source, limit: int | None, shard: Shard) -> tuple[Source, int | None]:
    """This process's contiguous part of the records :func:`iter_records` gives, and its limit.

    Contiguous parts in rank order concatenate to the whole, so parts written in rank order make the folder one
    process would. An indexable source (a folder, the Shapes world) is split by record; a streaming one by whole
    shards (tar or Parquet files), whose record counts are not known before reading, so ``limit`` is refused there.
    """
    if shard.world_size == 1:
        return source, limit
    r, w = shard.rank, shard.world_size
    if isinstance(source, StreamingSource):
        if limit is not None:
            raise ValueError("several processes split tar and Parquet data by whole shards, so --n cannot be honoured "
                             "exactly: leave it out, or embed with one process")  # fmt: skip
        k = len(source.shards)
        return ShardSubset(source, source.shards[k * r // w : k * (r + 1) // w]), None
    n = _record_count(source, limit)
    return IndexRange(source, n * r // w, n * (r + 1) // w), None


class _NoPairs(Exception):
    """A process's part gave no pair (a part may be empty; the whole may not)."""


@torch.no_grad()
def embed_dataset(
    clip_dir: str | Path, data: str, out: str | Path, *, limit: int | None = None, batch_size: int = 64,
    device: str = "cpu", progress: bool = True, workers: int = 0, shard_size: int | None = None,
    shard: Shard | None = None,
) -> tuple[Path, int, int]:  # fmt: skip
    """Embed ``data`` with the CLIP in ``clip_dir`` into ``out``; returns (folder, pairs written, skipped).

    Pairs go to disk a shard at a time (``shard_size`` pairs, default ``SHARD_SIZE``), so memory holds one shard
    however large the dataset; the folder appears whole when every pair is written, or not at all.

    With a ``shard`` of several processes (torchrun: one per GPU), each embeds its contiguous part
    (:func:`process_part`) into a folder of its own beside ``out``, and the main process merges the parts in rank
    order (moving shard files, reading no tensor): the same pairs in the same order as one process writes."""
    from unclip.clip import load_clip
    from unclip.prior.embeddings import SHARD_SIZE, EmbeddingWriter, merge_embeddings, refuse_foreign

    shard = shard or Shard()
    out = Path(out)
    staging = out.with_name(f".{out.name}.embed-parts")  # the parts of a multi-process run, removed after merging
    if shard.world_size > 1:

        def prepare() -> None:
            refuse_foreign(out)
            shutil.rmtree(staging, ignore_errors=True)  # a stopped run's parts: recomputed
            staging.mkdir(parents=True)

        shard.main_first(prepare)
    clip = load_clip(clip_dir, device)
    source, part_limit = process_part(parse_data_spec(data, clip.image_size), limit, shard)
    show = progress and shard.is_main
    batches = PairBatches(source, part_limit, clip.image_size, batch_size, progress=show, workers=workers)
    target = out if shard.world_size == 1 else staging / f"rank{shard.rank:05d}"
    count = 0
    try:
        with EmbeddingWriter(target, str(clip_dir), shard_size or SHARD_SIZE) as writer:
            for images, captions in batches:
                enc = clip.encode_text(captions)
                writer.add(clip.encode_image(images.to(device)), enc.embedding, enc.token_states, enc.mask)
            count = writer.count
            if count == 0:  # raised inside the block: nothing is written
                raise _NoPairs
    except _NoPairs:
        pass
    counts = [(count, batches.skipped)]
    if shard.world_size > 1:
        import torch.distributed as dist

        counts = [None] * shard.world_size
        dist.all_gather_object(counts, (count, batches.skipped))  # also waits for every part to be written
    total, skipped = sum(c for c, _ in counts), sum(k for _, k in counts)
    if total == 0:
        raise ValueError(f"data {data!r} gave no usable (image, caption) pair ({skipped} skipped)")
    if shard.world_size > 1:
        if shard.is_main:
            parts = [staging / f"rank{r:05d}" for r, (c, _) in enumerate(counts) if c > 0]
            merge_embeddings(parts, out, move=True)
            shutil.rmtree(staging, ignore_errors=True)
        shard.barrier()  # the folder exists when any process returns
    return out, total, skipped
