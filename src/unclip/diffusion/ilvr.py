"""Variations that keep an image's layout: ILVR (Choi et al., 2021), on any trained image denoiser.

Iterative Latent Variable Refinement conditions the reverse process on a reference image's low frequencies: after
every step, the low-pass part of the sample, φ_N(x_t), is replaced by that of the reference noised to the same
level, φ_N(y_t) with y_t ~ q(y_t | y_0). The sample then ends with the reference's φ_N exactly, while the rest,
the detail above the scale N, is drawn by the model given that structure. φ_N here is an orthogonal projection
onto images upsampled from 1/N of the size (applying it twice changes nothing), so "the reference's low-pass part"
has one meaning and the final sample's is the reference's exactly: with linear upsampling (the default, smooth)
or nearest (``box``: the N × N block means; it leaves block edges in variations).

This is RePaint's merge with a projection in place of a mask (:func:`unclip.diffusion.inpainting.sample_repaint`),
and RePaint's resampling applies to it unchanged. unCLIP's variations (§3.1) keep what CLIP encodes and let the
rest go; ILVR adds the layout on top (``variation_structure``, docs/pipeline.md). Beyond the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from unclip.diffusion._util import Generators
from unclip.diffusion.inpainting import sample_repaint
from unclip.diffusion.parameterization import Denoiser
from unclip.diffusion.samplers import Callback
from unclip.diffusion.schedules import TimestepGrid

LOWPASS_KINDS = ("box", "linear")


def _projection_1d(n: int, factor: int, kind: str) -> Tensor:
    """(n, n): the orthogonal projection of length-n signals onto the span of the n / factor coarse basis
    signals that ``kind`` upsampling makes (nearest: blocks; linear: hats), U (U^T U)^-1 U^T."""
    eye = torch.eye(n // factor, dtype=torch.float64)[None]
    if kind == "box":
        basis = F.interpolate(eye, size=n, mode="nearest")[0].T
    else:
        basis = F.interpolate(eye, size=n, mode="linear", align_corners=False)[0].T
    return basis @ torch.linalg.pinv(basis)


def lowpass(factor: int, kind: str = "box") -> Callable[[Tensor], Tensor]:
    """φ_N for (B, C, H, W) images whose sides ``factor`` divides, applied along each axis: the orthogonal
    projection onto images upsampled from (H / N, W / N). ``box``: nearest upsampling, so φ_N is the mean of every
    N × N block spread over the block; ``linear``: linear upsampling, a smooth low-pass without block edges.
    ``factor`` 1 is the identity."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"the low-pass factor must be a positive integer, got {factor!r}")
    if kind not in LOWPASS_KINDS:
        raise ValueError(f"the low-pass kind must be one of {', '.join(LOWPASS_KINDS)}, got {kind!r}")
    cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def project(v: Tensor) -> Tensor:
        if v.ndim != 4 or v.shape[-1] % factor or v.shape[-2] % factor:
            raise ValueError(f"a low-pass factor of {factor} needs (B, C, H, W) images with H and W divisible by "
                             f"it, got {tuple(v.shape)}")  # fmt: skip
        if factor == 1:
            return v
        key = (v.shape[-2], v.shape[-1], v.device, v.dtype)
        if key not in cache:
            cache[key] = tuple(_projection_1d(n, factor, kind).to(v.device, v.dtype) for n in key[:2])
        ph, pw = cache[key]
        return torch.einsum("hk,bckl,wl->bchw", ph, v, pw)

    return project


def sample_ilvr(
    denoiser: Denoiser,
    x: Tensor,
    grid: TimestepGrid,
    *,
    reference: Tensor,
    factor: int,
    kind: str = "linear",
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    resample: int = 1,
    jump: int = 1,
) -> Tensor:
    """Sample from ``x`` at ``grid.t[0]`` with the low-pass part φ_N (``factor``, ``kind``: :func:`lowpass`) held
    to ``reference``'s (same shape as ``x``). Steps are DDIM's with ``eta`` (1: DDPM, as ILVR); ``resample`` and
    ``jump`` as RePaint's. A smaller factor keeps more of the reference (1 returns it); a larger one leaves more
    to the model."""
    if reference.shape != x.shape:
        raise ValueError(f"the ILVR reference has shape {tuple(reference.shape)} but the sample has {tuple(x.shape)}")
    return sample_repaint(denoiser, x, grid, known=reference, project=lowpass(factor, kind), generator=generator,
                          callback=callback, progress=progress, eta=eta, resample=resample, jump=jump,
                          desc="ILVR")  # fmt: skip
