"""Probing the CLIP latent space (§4, Fig. 7): decode an image's z_i rebuilt from its top principal components.

"We ... reconstruct each source image's CLIP image embedding with progressively more PCA dimensions, and then
visualize the reconstructed image embeddings using our decoder with DDIM on a fixed seed" (§4). The few leading
components keep coarse semantics; the later ones add detail. The principal components are those of CLIP image
embeddings of a set of images (:func:`fit_embedding_pca`), fitted once per CLIP and data and cached
(:func:`embedding_pca`).

A reconstruction from k components, ``mean + P_k (z - mean)``, is shorter than z; it is scaled back to z's norm
before decoding, since the decoder only ever saw embeddings of CLIP's own norm (unit for this project's CLIPs).
Every reconstruction of one image is decoded with the same seed, so the rows differ by z_i alone: the same x_T,
and with an ancestral sampler the same noise at every step too. The decoder samples with the model's own settings
(the bundled model's DDPM, whose images are cleaner than its DDIM ones); ``--set decoder_sampler=ddim`` gives the
paper's DDIM (eta 0 unless ``decoder_eta`` is set).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from unclip.diffusion import generators_from_seeds

DEFAULT_PCA_DATA = "shapes:split=train"  # the bundled model's training images
DEFAULT_PCA_N = 5000


@dataclass
class EmbeddingPCA:
    mean: Tensor  # (D,)
    components: Tensor  # (K, D), orthonormal rows, by decreasing variance
    explained: Tensor  # (K,) each component's share of the total variance
    n: int  # embeddings fitted on

    def project(self, z: Tensor, k: int | None) -> Tensor:
        """z (B, D) rebuilt from its first ``k`` components (all of z when ``k`` is None)."""
        if k is None:
            return z
        if not 0 <= k <= self.components.shape[0]:
            raise ValueError(f"{k} components asked for: the PCA has {self.components.shape[0]} components (k must "
                             f"lie in [0, {self.components.shape[0]}])")  # fmt: skip
        mean, basis = self.mean.to(z), self.components[:k].to(z)
        return mean + (z - mean) @ basis.T @ basis

    def cumulative(self, k: int) -> float:
        """Share of the variance the first ``k`` components hold."""
        return float(self.explained[:k].sum())

    def save(self, path: str | Path) -> None:
        from unclip.atomic import atomic_file

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean, "components": self.components, "explained": self.explained}
        with atomic_file(path) as tmp:  # concurrent fits of one key never leave a half-written file
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"n": str(self.n)})

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingPCA:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            n = int(f.metadata()["n"])
        t = load_file(str(path))
        return cls(t["mean"], t["components"], t["explained"], n)


def fit_embedding_pca(z: Tensor) -> EmbeddingPCA:
    """Every principal component of embeddings z (N, D) (at most min(N - 1, D)), by decreasing variance."""
    from unclip.prior.pca import pca_components

    mean, components, explained = pca_components(z.float(), variance=1.0)
    keep = explained > 1e-12  # a component of no variance carries no direction worth decoding
    return EmbeddingPCA(mean, components[keep], explained[keep], int(z.shape[0]))


@torch.no_grad()
def image_embeddings(clip, spec: str, n: int, *, batch_size: int = 64, progress: bool = False) -> Tensor:
    """CLIP image embeddings of the first ``n`` images of a data spec, or the z_i an ``embeddings:DIR`` folder
    (``unclip embed``) already holds, which must come from the same CLIP."""
    if spec.startswith("embeddings:"):
        from unclip.prior.embeddings import load_embeddings

        z = load_embeddings(spec.removeprefix("embeddings:")).z_i[:n].float()
        if z.shape[1] != clip.embed_dim:
            raise ValueError(f"{spec!r} holds {z.shape[1]}-dim embeddings; this CLIP embeds in {clip.embed_dim}")
        return z
    from unclip.data.datasets import parse_data_spec
    from unclip.data.embed import PairBatches

    source = parse_data_spec(spec, clip.image_size)
    device = next(clip.parameters()).device
    batches = PairBatches(source, n, clip.image_size, batch_size, progress=progress, desc="PCA embeddings")
    return torch.cat([clip.encode_image(images.to(device)).float().cpu() for images, _ in batches])


def _cache_path(model_folder: str | Path, spec: str, n: int) -> Path:
    from unclip.eval.clip_score import folder_id
    from unclip.pipeline.index import clip_folder

    root = os.environ.get("UNCLIP_CACHE")
    key = hashlib.sha1(f"{folder_id(clip_folder(model_folder))}|{spec}|{n}".encode()).hexdigest()[:16]
    return (Path(root) if root else Path.home() / ".cache" / "unclip") / "pca" / f"{key}.safetensors"


def embedding_pca(
    pipe, model_folder: str | Path | None, *, spec: str = DEFAULT_PCA_DATA, n: int = DEFAULT_PCA_N,
    cache: bool = True, progress: bool = False,
) -> EmbeddingPCA:  # fmt: skip
    """The PCA of ``pipe.clip``'s image embeddings of ``spec``'s first ``n`` images, read from the cache when a
    fit of the same CLIP files, data and size is there (``$UNCLIP_CACHE/pca``, else ``~/.cache/unclip/pca``).
    ``model_folder`` is the pipeline (or CLIP) folder ``pipe`` came from; None: no cache."""
    if n < 2:
        raise ValueError(f"PCA needs at least 2 embeddings, got n={n}")
    path = _cache_path(model_folder, spec, n) if cache and model_folder is not None else None
    if path is not None and path.is_file():
        return EmbeddingPCA.load(path)
    z = image_embeddings(pipe.clip, spec, n, progress=progress)
    if z.shape[0] < 2:
        raise ValueError(f"data {spec!r} gave {z.shape[0]} usable images; PCA needs at least 2")
    pca = fit_embedding_pca(z)
    if path is not None:
        pca.save(path)
    return pca


def parse_dims(text: str) -> list[int | None]:
    """``"1,2,4,all"`` -> [1, 2, 4, None] (None: the embedding itself)."""
    out: list[int | None] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if item == "all":
            out.append(None)
            continue
        try:
            k = int(item)
        except ValueError as err:
            raise ValueError(f"dims must be integers or 'all', got {item!r}") from err
        if k < 0:
            raise ValueError(f"dims must be >= 0, got {k}")
        out.append(k)
    if not out:
        raise ValueError("give at least one number of dimensions")
    return out


def rebuilt_embeddings(pca: EmbeddingPCA, z: Tensor, dims: Sequence[int | None]) -> Tensor:
    """Each row of z (B, D) rebuilt from its first k components for every k of ``dims`` (None: z itself), scaled
    back to the row's norm: (len(dims) * B, D), all of dims' first k, then the next."""
    if z.shape[1] != pca.mean.shape[0]:
        raise ValueError(f"the PCA was fitted on {pca.mean.shape[0]}-dim embeddings; this CLIP's are {z.shape[1]}")
    rebuilt = torch.cat([pca.project(z, k) for k in dims])
    norms = z.norm(dim=1, keepdim=True).repeat(len(dims), 1)
    return rebuilt / rebuilt.norm(dim=1, keepdim=True).clamp_min(1e-12) * norms


@torch.no_grad()
def probe(
    pipe, image, dims: Sequence[int | None], pca: EmbeddingPCA, *, seed: int = 0, progress: bool = False
) -> Tensor:  # fmt: skip
    """§4: the image's z_i rebuilt from its first k components for each k of ``dims`` (None: z_i itself), each
    scaled to z_i's norm, decoded with one seed for every row and upsampled: (len(dims), 3, H, W) in [-1, 1]."""
    from unclip.pipeline.pipeline import from_pil

    if not dims:
        raise ValueError("give at least one number of dimensions")
    if isinstance(image, Tensor):
        x = image if image.ndim == 4 else image[None]
    else:
        x = from_pil([image], max(pipe.decoder.config.resolution, int(pipe.clip.image_size)))
    s = pipe.settings
    with pipe.autocast():
        z = pipe.clip.encode_image(x.to(pipe.device)).float()
        rebuilt = rebuilt_embeddings(pca, z, dims)
        gens = generators_from_seeds([seed] * len(dims))  # one x_T for every row: they differ by z_i alone
        decoded = pipe.decode(rebuilt, gens, s=s, progress=progress).float()
        return pipe.upsample(decoded, generators_from_seeds([seed] * len(dims)), s).float()
