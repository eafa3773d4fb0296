"""CLIP score: how well images match their prompts, as judged by a project CLIP.

For each image with a prompt, the cosine between its CLIP image embedding z_i and its prompt's text embedding
z_t; the score is **100 × the mean cosine**, the scale of the CLIP-similarity axis of GLIDE's guidance sweeps
(Nichol et al. 2021, FID against CLIP score) that unCLIP's §5.2 revisits. Unlike torchmetrics' ``CLIPScore`` we do
not clamp negative cosines to 0 (the mean stays an unbiased estimate), and unlike Hessel et al.'s CLIPScore
there is no 2.5 weight. Scores are comparable only under the same CLIP: ours is trained on the project's data, so
its numbers are not OpenAI-CLIP numbers.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

SCALE = 100.0


def load_project_clip(folder: str | Path, device: str | torch.device = "cpu"):
    """A CLIP from a CLIP model folder or from a pipeline folder (``pipeline.json``; its CLIP component).

    Returns ``(clip, clip_folder)``; the folder is the one the weights came from (for cache keys and reports).
    """
    from unclip.clip import load_clip
    from unclip.pipeline.index import clip_folder

    folder = clip_folder(folder)
    return load_clip(folder, device), folder


def folder_id(folder: Path) -> str:
    """Identity of a model folder's files (names, sizes, modification times), for feature-cache keys."""
    entries = sorted(
        f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in folder.rglob("*") if p.is_file()
    )
    return hashlib.sha1(f"{folder.resolve()}|{'|'.join(entries)}".encode()).hexdigest()[:16]


class CLIPImageFeatures:
    """Feature extractor for :func:`unclip.eval.features.folder_features`: [0, 1] images → unit z_i, float32.

    ``id`` (when given, e.g. from :func:`folder_id`) lets the folder's embeddings be cached like Inception features.
    """

    def __init__(self, clip, id: str | None = None):
        self.clip = clip
        self.id = None if id is None else f"clip-image:{id}"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        z_i = self.clip.encode_image(images * 2 - 1)  # the CLIP interface takes [-1, 1]
        return torch.nn.functional.normalize(z_i.float(), dim=-1).cpu().numpy()


@torch.inference_mode()
def text_embeddings(clip, prompts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit z_t ``(len(prompts), D)`` float32, in batches."""
    out = []
    for i in range(0, len(prompts), batch_size):
        z_t = clip.encode_text(prompts[i : i + batch_size]).embedding
        out.append(torch.nn.functional.normalize(z_t.float(), dim=-1).cpu().numpy())
    return np.concatenate(out)


def cosines(z_i: np.ndarray, z_t: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``(N, D)`` embedding sets, in float64."""
    a, b = np.asarray(z_i, np.float64), np.asarray(z_t, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"image and text embeddings must be (N, D) of one shape, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if (na == 0).any() or (nb == 0).any():
        raise ValueError("the cosine is undefined for a zero embedding")
    return (a * b).sum(1) / (na * nb)


@dataclass
class CLIPScoreResult:
    clip_score: float  # 100 × mean cosine
    cosine_mean: float
    cosine_std: float
    n: int
    n_prompts: int
    per_prompt: dict[str, dict[str, float | int]]  # prompt → {"clip_score", "n"}
    skipped: list[tuple[str, str]] = field(default_factory=list)  # images without a prompt or unreadable
    scale: float = SCALE
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def clip_score_folder(
    folder: str | Path,
    clip,
    *,
    clip_id: str | None = None,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> CLIPScoreResult:
    """CLIP score of the images directly in ``folder`` against their prompts (see :mod:`unclip.eval.sidecars`).

    ``clip`` is any CLIP encoder (``encode_image``, ``encode_text``); with ``clip_id`` and ``cache_dir`` the image
    embeddings are cached like Inception features.
    """
    from .features import folder_features
    from .sidecars import read_prompts

    start = time.perf_counter()
    ff = folder_features(
        folder, CLIPImageFeatures(clip, clip_id), batch_size=batch_size, cache_dir=cache_dir, progress=progress
    )
    found = read_prompts(folder, ff.files, allow_empty=False)
    rows = [i for i, name in enumerate(ff.files) if name in found.prompts]
    prompts = [found.prompts[ff.files[i]] for i in rows]
    unique = list(dict.fromkeys(prompts))
    z_t = text_embeddings(clip, unique)
    where = {p: j for j, p in enumerate(unique)}
    cos = cosines(ff.features[rows], z_t[[where[p] for p in prompts]])
    per_prompt: dict[str, dict[str, float | int]] = {}
    for p in unique:
        c = cos[[k for k, q in enumerate(prompts) if q == p]]
        per_prompt[p] = {"clip_score": SCALE * float(c.mean()), "n": len(c)}
    return CLIPScoreResult(
        clip_score=SCALE * float(cos.mean()),
        cosine_mean=float(cos.mean()),
        cosine_std=float(cos.std()),
        n=len(cos),
        n_prompts=len(unique),
        per_prompt=per_prompt,
        skipped=ff.skipped + found.skipped,
        seconds=time.perf_counter() - start,
    )
