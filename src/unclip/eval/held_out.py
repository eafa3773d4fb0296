"""Held-out (image, caption) pairs from any data spec, for the evaluations run on a user's own data.

Every stage's evaluation defaults to Shapes-world scenes, whose scene graphs let the judge say what is right.
On other captioned images (``--data SPEC``: a folder, tar shards, Parquet; ``unclip.data.datasets``) there is no
scene graph, so the evaluations keep what needs none: retrieval by caption, the prior's cosine and recall, and
how close a decoder's or upsampler's images come to the sources (CLIP similarity, PSNR, SSIM, FID / KID).

Images go through the training path (``decode_image`` then ``to_training_image``: short side resized, centre
crop, [-1, 1]), so a model is evaluated on exactly what it would have been trained on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

MIN_PAIRS = 2  # retrieval, FID and KID need at least two


@dataclass
class HeldOut:
    images: Tensor  # (N, 3, R, R) in [-1, 1]
    captions: list[str]
    scenes: list[dict[str, Any] | None]  # scene graphs where the data carries them (Shapes world, KEY.json)
    skipped: int  # records that did not decode or had no caption
    spec: str

    def __len__(self) -> int:
        return len(self.captions)

    def scene_graphs(self) -> list | None:
        """The scenes as ``SceneGraph`` s when every pair has a Shapes-world one, else None (nothing to judge)."""
        if not self.scenes or any(s is None for s in self.scenes):
            return None
        from unclip.data.shapes.scene import SceneGraph

        try:
            return [SceneGraph.from_json(s) for s in self.scenes]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None  # side files of another kind: not Shapes-world scene graphs


def load_held_out(spec: str, n: int, resolution: int, *, progress: bool = False) -> HeldOut:
    """The first ``n`` usable pairs of ``spec`` (fewer, with a warning, when the data holds fewer)."""
    from unclip.data.datasets import StreamingSource, parse_data_spec
    from unclip.data.embed import iter_records, training_pair

    if isinstance(n, bool) or not isinstance(n, int) or n < MIN_PAIRS:
        raise ValueError(f"n must be an integer >= {MIN_PAIRS}, got {n!r}")
    source = parse_data_spec(spec, resolution)
    unlimited = not isinstance(source, StreamingSource) and source.size() is None
    images: list[Tensor] = []
    captions: list[str] = []
    scenes: list[dict[str, Any] | None] = []
    skipped = 0
    with tqdm(total=n, desc="held-out pairs", unit="pair", disable=not progress, leave=False) as bar:
        # An unlimited source (Shapes world) never yields a bad record: n records are n pairs.
        for record in iter_records(source, n if unlimited else None):
            pair = training_pair(record, resolution)  # None: unreadable image or no caption
            if pair is None:
                skipped += 1
                continue
            images.append(pair[0])
            captions.append(pair[1])
            scenes.append(record.scene)
            bar.update()
            if len(images) == n:
                break
    if len(images) < MIN_PAIRS:
        raise ValueError(f"data {spec!r} holds {len(images)} usable (image, caption) pairs ({skipped} skipped); "
                         f"an evaluation needs at least {MIN_PAIRS}")  # fmt: skip
    if len(images) < n:
        warnings.warn(f"data {spec!r} holds {len(images)} usable pairs, fewer than the {n} asked for; "
                      "evaluating on those", stacklevel=2)  # fmt: skip
    if skipped:
        warnings.warn(f"data {spec!r}: {skipped} records skipped (unreadable image or no caption)", stacklevel=2)
    return HeldOut(torch.stack(images), captions, scenes, skipped, spec)


def caption_relevance(captions: list[str]) -> Tensor:
    """``out[i, j]``: caption j is image i's caption, compared after folding case and whitespace (a dataset may
    hold one caption for several images, or an image under several rows)."""
    key = [" ".join(c.lower().split()) for c in captions]
    index: dict[str, int] = {}
    ids = torch.tensor([index.setdefault(k, len(index)) for k in key])
    return ids[:, None] == ids[None, :]
