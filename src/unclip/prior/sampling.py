"""Sampling the diffusion prior: any core sampler, classifier-free guidance, and best-of-N reranking (§2.2).

"For the diffusion prior ... we generate two samples of z_i and select the one with a higher dot product with
z_t" (§2.2): candidates that agree more with the caption in CLIP space make better images. Candidate j of
caption i draws its noise from caption i's generator only, so caption i's result depends on its seed alone,
whatever the batch it is sampled in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unclip.diffusion import ModelDenoiser, clamp_x0, conditioned, get_sampler, guided, randn
from unclip.diffusion.samplers import Callback
from unclip.prior.diffusion_prior import CaptionCachedPrior, DiffusionPrior
from unclip.prior.transformer import check_caption


def best_of_n(candidates: Tensor, z_t: Tensor, by: str = "dot") -> tuple[Tensor, Tensor]:
    """From ``candidates`` (B, N, D) keep, per row, the one with the largest dot product with ``z_t`` (B, D), or
    the largest cosine (``by="cosine"``, for embeddings that are not unit vectors).

    Returns the chosen embeddings (B, D) and their indices (B,).
    """
    if candidates.ndim != 3 or z_t.ndim != 2 or candidates.shape[0] != z_t.shape[0]:
        raise ValueError(f"best_of_n needs candidates (B, N, D) and z_t (B, D), got "
                         f"{tuple(candidates.shape)} and {tuple(z_t.shape)}")  # fmt: skip
    if candidates.shape[2] != z_t.shape[1]:
        raise ValueError(f"candidates have dim {candidates.shape[2]} but z_t has dim {z_t.shape[1]}")
    if by not in ("dot", "cosine"):
        raise ValueError(f"by must be 'dot' or 'cosine', got {by!r}")
    scores = torch.einsum("bnd,bd->bn", candidates, z_t)
    if by == "cosine":  # |z_t| is the same for a row's candidates: dividing by each candidate's norm is enough
        scores = scores / candidates.norm(dim=2).clamp_min(1e-12)
    idx = scores.argmax(dim=1)
    return candidates[torch.arange(candidates.shape[0]), idx], idx


def mean_of_n(candidates: Tensor) -> Tensor:
    """The mean direction of ``candidates`` (B, N, D), at their mean norm: (B, D).

    The best point estimate of the true z_i direction is the mean of p(z_i | caption) on the sphere, and the
    mean of N draws estimates it (docs/prior.md, "How high can the cosine go?"). It trades the diversity of single
    draws for cosine with the true z_i: a mode-seeking alternative to §2.2's best-of-N, not in the paper.
    """
    if candidates.ndim != 3:
        raise ValueError(f"mean_of_n needs candidates (B, N, D), got {tuple(candidates.shape)}")
    norms = candidates.norm(dim=2, keepdim=True)
    direction = (candidates / norms.clamp_min(1e-12)).mean(dim=1)
    return direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12) * norms.mean(dim=1)


COMBINES = ("best", "mean")


@dataclass
class PriorSample:
    z_i: Tensor  # (B, D) the chosen image embeddings, in CLIP's (un-normalized) space
    candidates: Tensor  # (B, N, D) every candidate, same space
    chosen: Tensor  # (B,) index of the chosen candidate; -1 where the candidates were averaged (combine="mean")
    seconds: float  # wall time of the whole call


def _generators(generator: torch.Generator | Sequence[torch.Generator] | None, b: int) -> list[torch.Generator]:
    if generator is None:
        return [torch.Generator().manual_seed(int(s)) for s in torch.randint(0, 2**62, (b,))]
    if isinstance(generator, torch.Generator):
        # One seed per caption drawn from the one generator, so each row still has its own stream.
        return [torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=generator))) for _ in range(b)]
    gens = list(generator)
    if len(gens) != b:
        raise ValueError(f"got {len(gens)} generators for {b} captions; expected one per caption")
    return gens


@torch.no_grad()
def sample_diffusion_prior(
    model: DiffusionPrior,
    z_t: Tensor,
    tokens: Tensor,
    mask: Tensor,
    *,
    keep: Tensor | None = None,
    guidance_scale: float = 1.0,
    steps: int | None = None,
    sampler: str = "ddim",
    best_of: int | None = None,
    combine: str = "best",
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    **sampler_options: object,
) -> PriorSample:
    """Draw z_i for each caption: ``best_of`` candidates (default ``config.best_of``) with ``sampler`` over
    ``steps`` (default ``config.sample_steps``), keep the one with the largest z_i . z_t (``combine="best"``,
    §2.2) or their mean direction (``"mean"``, :func:`mean_of_n`).

    ``guidance_scale`` s gives ``D(∅) + s (D(c) - D(∅))`` (1: plain conditional, one branch only). ``keep``
    (B,) bool marks captions to treat as unconditional (e.g. empty captions); their candidates are ranked
    against z_t all the same.
    """
    start = time.perf_counter()
    c = model.config
    check_caption(z_t, tokens, mask, embed_dim=c.embed_dim, text_width=c.text_width, text_len=c.text_len)
    model.norm.check_fitted()
    n = c.best_of if best_of is None else best_of
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"best_of must be a positive integer, got {best_of!r}")
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    if not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
    b = z_t.shape[0]
    device = next(model.parameters()).device
    keep = torch.ones(b, dtype=torch.bool) if keep is None else keep
    if keep.shape != (b,) or keep.dtype != torch.bool:
        raise ValueError(f"keep must be a bool tensor of shape ({b},), got {keep.dtype} {tuple(keep.shape)}")

    # Rows of the expanded batch: caption i's candidates are rows i*n .. i*n + n-1.
    def rep(x: Tensor) -> Tensor:
        return x.to(device).repeat_interleave(n, dim=0)

    cond = {"z_t": rep(z_t), "tokens": rep(tokens), "mask": rep(mask), "keep": rep(keep)}
    gens = [g for g in _generators(generator, b) for _ in range(n)]
    schedule = model.schedule()
    grid = schedule.grid(c.sample_steps if steps is None else steps)
    # Our prior computes the caption's part of its sequence once per sampling run (exact; CaptionCachedPrior).
    net = CaptionCachedPrior(model) if isinstance(model, DiffusionPrior) else model
    denoiser = ModelDenoiser(net, schedule, model.parameterization())
    if guidance_scale == 1.0:
        d = conditioned(denoiser, cond)
    else:
        uncond = {**cond, "keep": torch.zeros_like(cond["keep"])}
        d = guided(denoiser, [uncond, cond], [guidance_scale])
    if c.sample_clamp is not None:  # after guidance, as diffusers' UnCLIPScheduler clips Karlo's prior
        d = clamp_x0(d, schedule, -c.sample_clamp, c.sample_clamp)
    x_T = randn((b * n, c.embed_dim), gens).to(device)
    x0 = get_sampler(sampler)(d, x_T, grid, generator=gens, callback=callback, progress=progress, **sampler_options)
    candidates = model.norm.denormalize(x0).view(b, n, c.embed_dim)
    if combine == "mean":
        z_i, chosen = mean_of_n(candidates), torch.full((b,), -1, dtype=torch.int64, device=device)
    else:
        z_i, chosen = best_of_n(candidates, z_t.to(device, candidates.dtype), c.rank_by)
    return PriorSample(z_i, candidates, chosen, time.perf_counter() - start)
