"""``--data embeddings:DIR``: train on a folder of precomputed CLIP embeddings, with no image in the pipeline.

The priors learn from (z_i, z_t, caption tokens) computed once by ``unclip embed`` (DESIGN.md §6); the images
those came from are not needed again. With this source the engine's loader delivers only what a prior stage
reads from a batch, each sample's global stream position and per-sample seed, so nothing is rendered, read or
decoded; the stage maps positions to rows of the folder by a fresh permutation per epoch (``EmbeddingSet.rows``
holds the folder in memory; ``embedding_shards.EmbeddingShards`` streams it a window of shards at a time, with
positions and ranks handled the same way).

Positions and seeds follow exactly the rule of the random-access sources (``BatchStream``): micro-batch ``g``
of process ``rank`` holds positions ``(g * world + rank) * b ...`` with seeds ``mix_seed(seed, 1, position)``.
So a run on ``embeddings:DIR`` takes the same steps as the older ``--data shapes --set model.embeddings=DIR``
(which renders images and throws them away), and resumes and splits over processes the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from unclip.data.datasets import Record, Source, parse_data_spec
from unclip.data.loader import BatchStream, MicroBatch, mix_seed

SCHEME = "embeddings"


def embeddings_folder(spec: str | None) -> str | None:
    """The folder of an ``embeddings:DIR`` spec, ``None`` for any other spec."""
    if not spec:
        return None
    scheme, sep, rest = spec.partition(":")
    if scheme != SCHEME or not sep:
        return None
    if not rest:
        raise ValueError(f"data spec {spec!r}: expected embeddings:DIR, a folder written by `unclip embed`")
    return rest


def same_folder(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


@dataclass
class EmbeddingSource:
    """An embedding folder as a data source: its size, and no images (``get`` is never called)."""

    folder: str
    count: int = 0

    def __post_init__(self) -> None:
        from unclip.prior.embeddings import read_meta

        self.count = int(read_meta(self.folder)["count"])  # a bad folder fails here, before any work

    def size(self) -> int | None:
        return self.count

    def get(self, i: int) -> Record:
        raise TypeError("an embedding folder holds no images; the engine reads it through PositionStream")

    def caption(self, i: int) -> str:
        raise ValueError("an embedding folder holds token states, not captions; give the data spec it was made from")

    def check_stage(self, stage: str, config: Any) -> None:
        """The stage must train on embeddings, and on this folder (``model.embeddings``), not another one."""
        folder = getattr(config, "embeddings", None)
        if folder is None:
            raise ValueError(f"--data {SCHEME}:{self.folder}: stage {stage!r} trains on images, not on CLIP "
                             "embeddings; give it an image source (shapes, folder:PATH, wds:PATTERN)")  # fmt: skip
        if not folder or not same_folder(folder, self.folder):
            raise ValueError(f"--data {SCHEME}:{self.folder} but model.embeddings is {folder!r}; they must name "
                             "the same folder (leave model.embeddings unset and --data fills it in)")  # fmt: skip


class PositionStream(BatchStream):
    """Micro-batches of stream positions and seeds only; ``image`` is an empty (B, 3, 0, 0) tensor."""

    def micro_batch(self, g: int) -> MicroBatch:
        first = g * self.b * self.world + self.rank * self.b  # as BatchStream._random_access_batch
        positions = list(range(first, first + self.b))
        seeds = [mix_seed(self.seed, 1, p) for p in positions]
        return MicroBatch(
            g, torch.empty(self.b, 3, 0, 0), [""] * self.b, [None] * self.b, torch.tensor(positions),
            torch.tensor(seeds), 0, [],
        )  # fmt: skip


def open_source(spec: str, resolution: int, stage: str = "", config: Any = None) -> Source | EmbeddingSource:
    """``parse_data_spec`` plus ``embeddings:DIR`` (checked against the stage's config when one is given)."""
    folder = embeddings_folder(spec)
    if folder is None:
        return parse_data_spec(spec, resolution)
    source = EmbeddingSource(folder)
    if config is not None:
        source.check_stage(stage, config)
    return source


def stream_type(source: Source | EmbeddingSource) -> type[BatchStream]:
    return PositionStream if isinstance(source, EmbeddingSource) else BatchStream
