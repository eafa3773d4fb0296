"""The image manipulations of §3, all in CLIP space on top of the same samplers.

An image becomes the decoder's bipartite latent (z_i, x_T): z_i from CLIP's image encoder and x_T from DDIM
inversion of the decoder conditioned on z_i (§3). Decoding (z_i, x_T) with DDIM at eta = 0 gives the image
back; eta > 0 gives *variations* that keep what CLIP sees and vary the rest (§3.1). *Interpolations* slerp
between two images' z_i, with x_T fixed or slerped too (§3.2). *Text diffs* move z_i toward the normalized
difference of two caption embeddings, z_d = norm(z_t - z_t0), again by slerp with x_T fixed (§3.3).

Manipulated images are decoded from z_i alone (the caption is dropped), since the image has no caption.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from unclip.diffusion import generators_from_seeds, invert_ddim, sampling_stage
from unclip.diffusion.ilvr import sample_ilvr
from unclip.pipeline.pipeline import UnCLIPPipeline, from_pil, to_pil

ImageLike = Image.Image | np.ndarray | str | Path


def slerp(a: Tensor, b: Tensor, theta: float | Tensor) -> Tensor:
    """Spherical interpolation per row of flattened ``a`` and ``b`` (any shape (B, ...)); theta in [0, 1].

    Norms are interpolated linearly along the arc's direction (exact for equal norms, as CLIP embeddings and
    Gaussian latents nearly are); nearly parallel rows fall back to linear interpolation.
    """
    shape = a.shape
    a2, b2 = a.reshape(shape[0], -1).double(), b.reshape(shape[0], -1).double()
    theta = torch.as_tensor(theta, dtype=torch.float64, device=a.device).reshape(-1, 1)
    na, nb = a2.norm(dim=1, keepdim=True), b2.norm(dim=1, keepdim=True)
    ua, ub = a2 / na.clamp_min(1e-12), b2 / nb.clamp_min(1e-12)
    omega = torch.arccos((ua * ub).sum(1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    near = so.abs() < 1e-6
    wa = torch.where(near, 1 - theta, torch.sin((1 - theta) * omega) / so.where(~near, torch.ones_like(so)))
    wb = torch.where(near, theta, torch.sin(theta * omega) / so.where(~near, torch.ones_like(so)))
    direction = wa * ua + wb * ub
    norm = (1 - theta) * na + theta * nb
    out = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12) * norm
    return out.reshape(shape).to(a.dtype)


def _decoder_input(pipe: UnCLIPPipeline, images: Sequence[ImageLike] | Tensor) -> tuple[Tensor, Tensor]:
    """The images at the decoder's resolution on the pipeline's device, and as CLIP should read them (below)."""
    res = pipe.decoder.config.resolution
    x = images if isinstance(images, Tensor) else from_pil(images, res)
    source = x if isinstance(images, Tensor) else from_pil(images, max(res, int(pipe.clip.image_size)))
    x = x.to(pipe.device)
    if x.shape[-1] != res or x.shape[-2] != res:
        x = F.interpolate(x, size=(res, res), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    return x, source


@torch.no_grad()
def invert(
    pipe: UnCLIPPipeline, images: Sequence[ImageLike] | Tensor, *, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """The bipartite latent (z_i, x_T) of images: CLIP's embedding and the decoder's DDIM-inverted noise.

    Image files and PIL images are read twice: at CLIP's input size for z_i (CLIP sees the image, not the decoder's
    thumbnail of it: Karlo's ViT-L/14 takes 224 px, its decoder 64 px) and at the decoder's for x_T (resizing the
    first read instead would change the pixels that eta = 0 must give back). A tensor is
    encoded as given, so evaluations that pass decoder-sized renders encode what the decoder was trained on."""
    return _invert(pipe, *_decoder_input(pipe, images), progress=progress)


def _invert(pipe: UnCLIPPipeline, x: Tensor, source: Tensor, progress: bool = False) -> tuple[Tensor, Tensor]:
    """:func:`invert` of images already read (:func:`_decoder_input`): z_i of ``source``, x_T of ``x``."""
    s = pipe.settings
    with pipe.autocast():
        z_i = pipe.clip.encode_image(source.to(pipe.device)).float()
        den, schedule = pipe.decoder_denoiser(z_i, embedding_guidance=False)  # the path decode_latents retraces
        grid = schedule.grid_below(s.inversion_steps, s.inversion_strength)
        with sampling_stage("inversion"):
            x_T = invert_ddim(den, x, grid, refine=s.inversion_refine, progress=progress)
    return z_i, x_T.float()


def structure_factor(pipe: UnCLIPPipeline) -> int:
    """``variation_structure``, checked against the decoder's resolution (0: off)."""
    factor, res = pipe.settings.variation_structure, pipe.decoder.config.resolution
    if factor and res % factor:
        divisors = ", ".join([str(d) for d in range(2, res + 1) if res % d == 0][:6])
        raise ValueError(f"variation_structure {factor} must divide the decoder's resolution {res} (e.g. {divisors})")
    return factor


@torch.no_grad()
def decode_latents(
    pipe: UnCLIPPipeline, z_i: Tensor, x_T: Tensor, seeds: Sequence[int], eta: float, structure: Tensor | None = None
) -> Tensor:  # fmt: skip
    """Decode bipartite latents (z_i, x_T) with DDIM(eta) and upsample; one seed per row. With ``structure`` (the
    source images at the decoder's resolution) and ``variation_structure`` N > 0, each row keeps its source's
    low-pass part at scale N (ILVR, :mod:`unclip.diffusion.ilvr`)."""
    # Decoding uses the same grid as the inversion, so eta = 0 returns the inverted image.
    s = dataclasses.replace(
        pipe.settings, decoder_sampler="ddim", decoder_eta=eta, decoder_steps=pipe.settings.inversion_steps
    )
    gens = generators_from_seeds(seeds)
    factor = structure_factor(pipe) if structure is not None else 0
    sampler = None
    if factor:
        sampler = functools.partial(sample_ilvr, reference=structure.to(pipe.device, torch.float32), factor=factor,
                                    eta=eta)  # fmt: skip
    with pipe.autocast():
        decoded = pipe.decode(z_i, gens, x_T=x_T, s=s, strength=s.inversion_strength, sampler=sampler).float()
        return pipe.upsample(decoded, gens, s).float()


@torch.no_grad()
def best_variations(
    pipe: UnCLIPPipeline, z_i: Tensor, x_T: Tensor, seeds: Sequence[int], eta: float, structure: Tensor | None = None
) -> Tensor:  # fmt: skip
    """Decode each row's latents ``pipe.settings.variation_best_of`` times and keep the decode whose CLIP image
    embedding is closest (cosine) to the row's z_i: what CLIP sees kept, as §3.1 asks of a variation, checked
    rather than hoped for (CLIP reranking, as DALL·E's samples were reranked). Candidate j of the row with seed s
    uses seed s·N + j, so N = 1 is :func:`decode_latents` itself. ``structure``: as :func:`decode_latents`."""
    best_of = pipe.settings.variation_best_of
    if best_of == 1:
        return decode_latents(pipe, z_i, x_T, seeds, eta, structure)
    rows = len(seeds)
    cand = decode_latents(pipe, z_i.repeat_interleave(best_of, 0), x_T.repeat_interleave(best_of, 0),
                          [s * best_of + j for s in seeds for j in range(best_of)], eta,
                          None if structure is None else structure.repeat_interleave(best_of, 0))  # fmt: skip
    with pipe.autocast():
        seen = pipe.clip.encode_image(cand).float()
    score = F.cosine_similarity(seen.view(rows, best_of, -1), z_i.float()[:, None], dim=2)
    pick = score.argmax(1)
    return cand.view(rows, best_of, *cand.shape[1:])[torch.arange(rows), pick]


@torch.no_grad()
def variations(pipe: UnCLIPPipeline, image: ImageLike, n: int = 4, *, eta: float = 1.0, seed: int = 0) -> Tensor:
    """§3.1: ``n`` variations of one image, (n, 3, H, W) in [-1, 1]; eta = 0 reconstructs the image. With
    ``variation_best_of`` N > 1 each is the best of N by CLIP similarity to the image (:func:`best_variations`)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    factor = structure_factor(pipe)  # a bad variation_structure fails here, before the inversion's work
    x, source = _decoder_input(pipe, [image])
    z_i, x_T = _invert(pipe, x, source)
    structure = x.expand(n, -1, -1, -1) if factor else None  # the pixels the inversion started from
    return best_variations(pipe, z_i.expand(n, -1), x_T.expand(n, -1, -1, -1), [seed + k for k in range(n)], eta,
                           structure)  # fmt: skip


@torch.no_grad()
def interpolate(
    pipe: UnCLIPPipeline, image_a: ImageLike, image_b: ImageLike, frames: int = 8, *, latent: str = "fixed",
    eta: float = 0.0, seed: int = 0,
) -> Tensor:  # fmt: skip
    """§3.2: ``frames`` images from a to b along slerp(z_a, z_b, θ); x_T fixed at a's or slerped (``latent``)."""
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    if latent not in ("fixed", "slerp"):
        raise ValueError(f"latent must be 'fixed' or 'slerp', got {latent!r}")
    z, x_T = invert(pipe, [image_a, image_b])
    theta = torch.linspace(0, 1, frames, device=z.device)
    zs = slerp(z[:1].expand(frames, -1), z[1:].expand(frames, -1), theta)
    xa, xb = x_T[:1].expand(frames, -1, -1, -1), x_T[1:].expand(frames, -1, -1, -1)
    xs = xa if latent == "fixed" else slerp(xa, xb, theta)
    return decode_latents(pipe, zs, xs, [seed] * frames, eta)


def text_diff_direction(pipe: UnCLIPPipeline, z_i: Tensor, sources: Sequence[str], targets: Sequence[str]) -> Tensor:
    """§3.3's z_d = norm(z_t(target) - z_t(source)) per row, scaled to each z_i's norm so slerp turns only z_i's
    direction."""
    z_t = pipe.clip.encode_text([*sources, *targets]).embedding
    n = len(sources)
    return F.normalize(z_t[n:] - z_t[:n], dim=1) * z_i.norm(dim=1, keepdim=True)


@torch.no_grad()
def text_diff(
    pipe: UnCLIPPipeline, image: ImageLike, source: str, target: str, frames: int = 5, *, max_theta: float = 0.5,
    eta: float = 0.0, seed: int = 0,
) -> Tensor:  # fmt: skip
    """§3.3: move the image's z_i toward z_d = norm(z_t(target) - z_t(source)) for θ in [0, max_theta]."""
    if not source.strip() or not target.strip():
        raise ValueError("text diffs need a non-empty source and target caption")
    if not 0 < max_theta <= 1:
        raise ValueError(f"max_theta must be in (0, 1], got {max_theta}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    z_i, x_T = invert(pipe, [image])
    z_d = text_diff_direction(pipe, z_i, [source], [target])
    theta = torch.linspace(0, max_theta, frames, device=z_i.device)
    zs = slerp(z_i.expand(frames, -1), z_d.expand(frames, -1), theta)
    return decode_latents(pipe, zs, x_T.expand(frames, -1, -1, -1), [seed] * frames, eta)


__all__ = [
    "best_variations",
    "decode_latents",
    "interpolate",
    "invert",
    "slerp",
    "text_diff",
    "text_diff_direction",
    "to_pil",
    "variations",
]
