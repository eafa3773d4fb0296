"""``unclip eval probing``: how many principal components of z_i does the decoder need (§4, Fig. 7)?

The paper shows pictures: reconstructions from 20 to 320 of 1,024 components keep coarse semantics first and
fine detail later. Here the same decodes are measured. Each held-out image's z_i is rebuilt from its first k
principal components (scaled back to z_i's norm, :func:`unclip.pipeline.probing.rebuilt_embeddings`) and decoded
with the image's own seed, the same for every k, and judged:

- ``faithful``: the fraction of reconstructions whose scene graph requirements hold (Shapes world, or data with
  scene graphs), as ``unclip eval decoder`` judges them;
- ``clip_similarity``: the mean cosine between the CLIP embedding of a reconstruction and the source's z_i.

Decodes are judged at the decoder's resolution, as ``unclip eval decoder`` does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def probing_curve(
    pipe, pca, dims: Sequence[int | None], *, n: int = 24, seed: int = 0, batch_size: int = 16, data: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Faithfulness and CLIP similarity of decodes from the top-k reconstruction of z_i, for every k of ``dims``."""
    from tqdm.auto import tqdm

    from unclip.diffusion import generators_from_seeds
    from unclip.eval.generation import held_out_images, reconstruction_scores
    from unclip.pipeline.probing import rebuilt_embeddings

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not dims:
        raise ValueError("give at least one number of dimensions")
    real, scenes = held_out_images(data, n, pipe.decoder.config.resolution)
    n = len(real)
    faithful: list[list[bool]] = [[] for _ in dims]
    similarity: list[list[float]] = [[] for _ in dims]
    start = time.perf_counter()
    with tqdm(total=n * len(dims), desc="probing", unit="img", disable=not progress) as bar:
        for b in range(0, n, batch_size):
            x = real[b : b + batch_size].to(pipe.device)
            with pipe.autocast():
                z = pipe.clip.encode_image(x).float()
            for i, k in enumerate(dims):
                z_k = rebuilt_embeddings(pca, z, [k])
                gens = generators_from_seeds(range(seed + b, seed + b + len(x)))  # image j: seed + j at every k
                with pipe.autocast():
                    fake = pipe.decode(z_k, gens).float()
                    sims, judged = reconstruction_scores(pipe, fake, z, scenes and scenes[b : b + batch_size])
                similarity[i] += sims
                faithful[i] += [all(v.values()) for v in judged]
                bar.update(len(x))
    rows = []
    for i, k in enumerate(dims):
        row: dict[str, Any] = {"dims": "all" if k is None else k, "variance": 1.0 if k is None else pca.cumulative(k)}
        row["clip_similarity"] = float(np.mean(similarity[i]))
        if scenes:
            row["faithful"] = float(np.mean(faithful[i]))
        rows.append(row)
    out = {"rows": rows, "n": n, "pca_n": pca.n, "components": int(pca.components.shape[0])}
    return out | {"seconds": time.perf_counter() - start} | ({"data": data} if data is not None else {})
