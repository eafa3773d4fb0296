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
    skipped = 0
    images: list[torch.Tensor] = []
    captions: list[str] = []

    def flush() -> None:
        if not images:
            return
        z_i = clip.encode_image(torch.stack(images).to(device))
        enc = clip.encode_text(captions)
        for key, value in (("z_i", z_i), ("z_t", enc.embedding), ("tokens", enc.token_states), ("mask", enc.mask)):
            parts[key].append(value.cpu())
        images.clear()
        captions.clear()

    bar = tqdm(iter_records(source, limit), total=limit, desc="embed", disable=not progress)
    for record in bar:
        try:
            arr = decode_image(record)
            if not record.caption or not record.caption.strip():
                raise CorruptSample(f"{record.key}: no caption")
        except CorruptSample:
            skipped += 1
            continue
        images.append(to_training_image(arr, clip.image_size))  # resized and centre-cropped, in [-1, 1]
        captions.append(record.caption)
        if len(images) == batch_size:
            flush()
    flush()
    if not parts["z_i"]:
        raise ValueError(f"data {data!r} gave no usable (image, caption) pair ({skipped} skipped)")
    cat = {k: torch.cat(v) for k, v in parts.items()}
    folder = write_embeddings(out, EmbeddingSet(cat["z_i"], cat["z_t"], cat["tokens"], cat["mask"], clip=str(clip_dir)))
    return folder, len(cat["z_i"]), skipped
