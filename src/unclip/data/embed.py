"""``unclip embed``: CLIP embeddings of a dataset, computed once and stored for prior training (§2.2).

For each (image, caption) pair: z_i from the image encoder, z_t and the token states and mask from the text
encoder, written as an embedding folder (``unclip.prior.embeddings``) that records which CLIP made it.
Unreadable samples are skipped and counted, like everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unclip.data.datasets import CorruptSample, Record, ShardSource, Source, decode_image, parse_data_spec
from unclip.data.loader import to_training_image


def iter_records(source: Source, limit: int | None) -> Iterator[Record]:
    """Records in the source's own order, at most ``limit`` (required for the unlimited Shapes world)."""
    if isinstance(source, ShardSource):
        count = 0
        for shard in source.shards:
            for record in source.records(shard):
                if limit is not None and count >= limit:
                    return
                count += 1
                yield record
        return
    size = source.size()
    if size is None and limit is None:
        raise ValueError("this data source is unlimited (Shapes world): pass --n")
    n = size if limit is None else (limit if size is None else min(size, limit))
    for i in range(n):
        yield source.get(i)


class PairBatches:
    """Batches of (images, captions) from a source's records, for encoders that run once over a dataset.

    Images are resized and centre-cropped to ``image_size`` in [-1, 1] (``to_training_image``), as for training;
    records that do not decode or have no caption are skipped and counted in ``skipped``.
    """

    def __init__(
        self, source: Source, limit: int | None, image_size: int, batch_size: int, *, progress: bool = False,
        desc: str = "embed",
    ) -> None:  # fmt: skip
        self.source, self.limit, self.image_size, self.batch_size = source, limit, image_size, batch_size
        self.progress, self.desc = progress, desc
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        images: list[torch.Tensor] = []
        captions: list[str] = []
        total = self.limit if self.limit is not None or isinstance(self.source, ShardSource) else self.source.size()
        records = iter_records(self.source, self.limit)
        for record in tqdm(records, total=total, desc=self.desc, disable=not self.progress):
            try:
                arr = decode_image(record)
                if not record.caption or not record.caption.strip():
                    raise CorruptSample(f"{record.key}: no caption")
            except CorruptSample:
                self.skipped += 1
                continue
            images.append(to_training_image(arr, self.image_size))
            captions.append(record.caption)
            if len(images) == self.batch_size:
                yield torch.stack(images), captions
                images, captions = [], []
        if images:
            yield torch.stack(images), captions


@torch.no_grad()
def embed_dataset(
    clip_dir: str | Path, data: str, out: str | Path, *, limit: int | None = None, batch_size: int = 64,
    device: str = "cpu", progress: bool = True,
) -> tuple[Path, int, int]:  # fmt: skip
    """Embed ``data`` with the CLIP in ``clip_dir`` into ``out``; returns (folder, pairs written, skipped)."""
    from unclip.clip import load_clip
    from unclip.prior.embeddings import EmbeddingSet, write_embeddings

    clip = load_clip(clip_dir, device)
    source = parse_data_spec(data, clip.image_size)
    parts: dict[str, list[torch.Tensor]] = {"z_i": [], "z_t": [], "tokens": [], "mask": []}
    batches = PairBatches(source, limit, clip.image_size, batch_size, progress=progress)
    for images, captions in batches:
        z_i = clip.encode_image(images.to(device))
        enc = clip.encode_text(captions)
        for key, value in (("z_i", z_i), ("z_t", enc.embedding), ("tokens", enc.token_states), ("mask", enc.mask)):
            parts[key].append(value.cpu())
    skipped = batches.skipped
    if not parts["z_i"]:
        raise ValueError(f"data {data!r} gave no usable (image, caption) pair ({skipped} skipped)")
    cat = {k: torch.cat(v) for k, v in parts.items()}
    folder = write_embeddings(out, EmbeddingSet(cat["z_i"], cat["z_t"], cat["tokens"], cat["mask"], clip=str(clip_dir)))
    return folder, len(cat["z_i"]), skipped
