"""Guidance by the gradient of a differentiable objective of the denoised estimate x̂0, as a denoiser combinator.

Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2) shifts eps by −σ_t ∇_{x_t} log p(y | x_t) and needs a
classifier trained on noisy x_t (GLIDE's noised CLIP, §2.3). Evaluating the objective on x̂0 instead needs no such
network: any model that reads clean images can judge the estimate. Going through the denoiser's Jacobian as well
(universal guidance, Bansal et al. 2023; DPS, Chung et al. 2023) costs a backward pass through the U-Net at every
step; we take the cheaper step of manifold-preserving guided diffusion (He et al. 2024, MPGD), which moves x̂0 along
the objective's gradient and re-derives eps from the moved x̂0, so the sampler's next x_t carries the change::

    x̂0' = x̂0 + s ∇_{x̂0} f(x̂0),      eps' = (x_t − α_t x̂0') / σ_t

Only the objective's model (for unCLIP's decoder, the CLIP image tower; ``unclip.pipeline``) is differentiated.
``scale`` s = 0 returns the denoiser unchanged. Apply it after classifier-free guidance and before the clamp of
x̂0 to the data range, so the clamp sees the moved estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from unclip.diffusion.parameterization import Denoised, Denoiser, eps_from_x0
from unclip.diffusion.schedules import NoiseSchedule


def x0_gradient_guidance(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    objective: Callable[[Tensor], Tensor],
    scale: float,
    clamp: tuple[float, float] | None = (-1.0, 1.0),
) -> Denoiser:
    """``denoiser`` with x̂0 moved by ``scale`` × the gradient of ``objective`` (per-sample values ``(B,)``, larger
    is better; each sample's gradient is its own value's, the objective must not mix samples).

    ``clamp``: the range x̂0 is clipped to before the objective reads it (the images it expects); None reads it as is.
    The gradient is taken even when the caller runs under ``torch.no_grad`` (samplers do)."""
    scale = float(scale)
    if scale < 0 or scale != scale:
        raise ValueError(f"gradient guidance scale must be >= 0, got {scale}")
    if scale == 0.0:
        return denoiser
    table = schedule.alpha_bar

    def guided(x: Tensor, t: Tensor) -> Denoised:
        d = denoiser(x, t)
        with torch.enable_grad():
            x0 = d.x0.detach().float().requires_grad_(True)
            read = x0 if clamp is None else x0.clamp(*clamp)
            values = objective(read)
            if values.shape != (x.shape[0],):
                raise ValueError(f"the guidance objective must return one value per sample ({x.shape[0]},), "
                                 f"got {tuple(values.shape)}")  # fmt: skip
            (grad,) = torch.autograd.grad(values.sum(), x0)
        x0_new = (x0.detach() + scale * grad).to(d.x0.dtype)
        return Denoised(x0_new, eps_from_x0(x, x0_new, table.to(x.device)[t.to(x.device)]), d.var_frac)

    return guided


def embedding_objective(encode_image: Callable[[Tensor], Tensor], target: Tensor) -> Callable[[Tensor], Tensor]:
    """f(x̂0) = cos(encode_image(x̂0), target) per sample: how close the estimate's image embedding is to ``target``
    (for the decoder, the z_i it was given; §2.1 trains it to invert exactly this map)."""

    def cosine(x0: Tensor) -> Tensor:
        return torch.nn.functional.cosine_similarity(encode_image(x0).float(), target.float(), dim=-1)

    return cosine
