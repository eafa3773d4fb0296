"""Variations that keep an image's layout: ILVR (Choi et al., 2021), on any trained image denoiser.

Iterative Latent Variable Refinement conditions the reverse process on a reference image's low frequencies: after
every step, the low-pass part of the sample, φ_N(x_t), is replaced by that of the reference noised to the same
level, φ_N(y_t) with y_t ~ q(y_t | y_0). The sample then ends with the reference's φ_N exactly, while the rest,
the detail above the scale N, is drawn by the model given that structure. φ_N here is N × N box averaging
followed by nearest upsampling: a linear projection (applying it twice changes nothing), so "the reference's
low-pass part" has one meaning, and the final sample's N × N block means equal the reference's.

This is RePaint's merge with a projection in place of a mask (:func:`unclip.diffusion.inpainting.sample_repaint`),
and RePaint's resampling applies to it unchanged. unCLIP's variations (§3.1) keep what CLIP encodes and let the
rest go; ILVR adds the layout on top (``variation_structure``, docs/pipeline.md). Beyond the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from unclip.diffusion._util import Generators
from unclip.diffusion.inpainting import sample_repaint
from unclip.diffusion.parameterization import Denoiser
from unclip.diffusion.samplers import Callback
from unclip.diffusion.schedules import TimestepGrid


def lowpass(factor: int) -> Callable[[Tensor], Tensor]:
    """φ_N: the mean of every ``factor`` × ``factor`` block, spread back over the block ((B, C, H, W) images
    whose sides ``factor`` divides). ``factor`` 1 is the identity."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"the low-pass factor must be a positive integer, got {factor!r}")

    def project(v: Tensor) -> Tensor:
        if v.ndim != 4 or v.shape[-1] % factor or v.shape[-2] % factor:
            raise ValueError(f"a low-pass factor of {factor} needs (B, C, H, W) images with H and W divisible by "
                             f"it, got {tuple(v.shape)}")  # fmt: skip
        if factor == 1:
            return v
        return F.interpolate(F.avg_pool2d(v, factor), scale_factor=factor, mode="nearest")

    return project


def sample_ilvr(
    denoiser: Denoiser,
    x: Tensor,
    grid: TimestepGrid,
    *,
    reference: Tensor,
    factor: int,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    resample: int = 1,
    jump: int = 1,
) -> Tensor:
    """Sample from ``x`` at ``grid.t[0]`` with the ``factor``-block means held to ``reference``'s (same shape as
    ``x``). Steps are DDIM's with ``eta`` (1: DDPM, as ILVR); ``resample`` and ``jump`` as RePaint's. A smaller
    factor keeps more of the reference (1 returns it); a larger one leaves more to the model."""
    if reference.shape != x.shape:
        raise ValueError(f"the ILVR reference has shape {tuple(reference.shape)} but the sample has {tuple(x.shape)}")
    return sample_repaint(denoiser, x, grid, known=reference, project=lowpass(factor), generator=generator,
                          callback=callback, progress=progress, eta=eta, resample=resample, jump=jump,
                          desc="ILVR")  # fmt: skip
