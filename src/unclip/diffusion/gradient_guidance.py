"""Guidance by the gradient of a differentiable objective of the denoised estimate x̂0, as a denoiser combinator.

Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2) shifts eps by −σ_t ∇_{x_t} log p(y | x_t) and needs a
classifier trained on noisy x_t (GLIDE's noised CLIP, §2.3). Evaluating the objective f on x̂0 instead needs no such
network: any model that reads clean images can judge the estimate. Two ways to turn f(x̂0) into a step:

``x0`` (manifold-preserving guided diffusion, He et al. 2024, MPGD): move x̂0 along f's gradient and re-derive eps
from the moved x̂0, so the sampler's next x_t carries the change. Only the objective's model is differentiated::

    x̂0' = x̂0 + s ∇_{x̂0} f(x̂0),      eps' = (x_t − α_t x̂0') / σ_t

``denoiser`` (after universal guidance's forward step, Bansal et al. 2023, and DPS, Chung et al. 2023): the gradient
of f(x̂0(x_t)) is taken with respect to x_t, through the denoiser as well (a backward pass through the network at
every step), so the denoiser's Jacobian keeps the step on images the network would draw. Classifier guidance would
move x̂0 by (σ_t²/α_t) ∇_{x_t} f, which at the cosine schedule's first step (α ≈ 4e-5) is 2·10⁴ times the gradient
and saturates every pixel in the clamp; we weight by σ_t² α_t instead. For a denoiser with x̂0 ≈ x_t / α_t that is
σ_t² times the ``x0`` rule's step: largest at the noisy steps, where a layout is decided, and fading at the clean
ones, where the ``x0`` rule's step mostly retouches what CLIP reads::

    x̂0' = x̂0 + s σ_t² α_t ∇_{x_t} f(x̂0(x_t)),      eps' = (x_t − α_t x̂0') / σ_t

``noised`` (:func:`noised_gradient_guidance`): an objective that reads x_t itself, trained for noisy inputs (GLIDE's
noised CLIP, §2.3: ``unclip.clip.noised``), differentiated alone, with the ``denoiser`` weighting::

    x̂0' = x̂0 + s σ_t² α_t ∇_{x_t} f(x_t, t)

``interval`` (lo, hi) limits the guidance to the steps whose timestep, as a fraction (t + 1) / T of the schedule,
lies in [lo, hi]; the others call the denoiser alone and cost nothing more (after the guidance interval of
Kynkäänniemi et al. 2024, there for classifier-free guidance). With the ``denoiser`` weighting the low-noise steps
move x̂0 least (σ_t² → 0) but cost a backward pass each like every other step.

``scale`` s = 0 returns the denoiser unchanged. Apply it after classifier-free guidance and clamp x̂0 to the data
range after it, so the sampler never sees a moved estimate outside it (the pipeline clamps before and after: the
objective then reads the images CLIP expects, and the clamped pixels pass no gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from unclip.diffusion._util import append_dims
from unclip.diffusion.parameterization import Denoised, Denoiser, eps_from_x0
from unclip.diffusion.schedules import NoiseSchedule
from unclip.transfers import table_on

GRADIENTS = ("x0", "denoiser")


def x0_gradient_guidance(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    objective: Callable[[Tensor], Tensor],
    scale: float,
    clamp: tuple[float, float] | None = (-1.0, 1.0),
    gradient: str = "x0",
    interval: tuple[float, float] = (0.0, 1.0),
) -> Denoiser:
    """``denoiser`` with x̂0 moved by ``scale`` × the gradient of ``objective`` (per-sample values ``(B,)``, larger
    is better; each sample's gradient is its own value's, the objective must not mix samples).

    ``gradient``: ``x0`` differentiates the objective alone, ``denoiser`` also the denoiser (module docs).
    ``clamp``: the range x̂0 is clipped to before the objective reads it (the images it expects); None reads it as is.
    ``interval``: the fractions (t + 1) / T of the schedule between which it applies (module docs).
    The gradient is taken even when the caller runs under ``torch.no_grad`` (samplers do)."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient guidance differentiates one of {', '.join(GRADIENTS)}, got {gradient!r}")
    scale, lo, hi = _checked(scale, interval)
    if scale == 0.0:
        return denoiser
    table = schedule.alpha_bar

    def values_of(x0: Tensor, batch: int) -> Tensor:
        return _per_sample(objective(x0 if clamp is None else x0.clamp(*clamp)), batch)

    def guided(x: Tensor, t: Tensor) -> Denoised:
        t = t.to(x.device)
        active = _active(t, len(table), lo, hi)
        if not bool(active.any()):
            return denoiser(x, t)
        ab = table_on(table, x.device)[t]
        gain = append_dims((scale * active).to(x.dtype), x.ndim)  # 0 for the samples outside the interval
        if gradient == "denoiser":
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                d = denoiser(xg, t)
                (grad,) = torch.autograd.grad(values_of(d.x0.float(), x.shape[0]).sum(), xg)
            x0_new = d.x0.detach() + gain * _noisy_weight(ab, x) * grad.to(d.x0.dtype)
        else:
            d = denoiser(x, t)
            with torch.enable_grad():
                x0 = d.x0.detach().float().requires_grad_(True)
                (grad,) = torch.autograd.grad(values_of(x0, x.shape[0]).sum(), x0)
            x0_new = (x0.detach() + gain.float() * grad).to(d.x0.dtype)
        return Denoised(x0_new, eps_from_x0(x, x0_new, ab), d.var_frac)

    return guided


def noised_gradient_guidance(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    objective: Callable[[Tensor, Tensor], Tensor],
    scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> Denoiser:
    """``denoiser`` with x̂0 moved by ``scale`` σ_t² α_t ∇_{x_t} ``objective(x_t, t)``: classifier guidance with an
    objective that reads the noisy sample itself (GLIDE's noised CLIP, §2.3; ``unclip.clip.noised``), so no backward
    pass goes through the denoiser. Weighted as the ``denoiser`` gradient of :func:`x0_gradient_guidance` (module
    docs), a scale asks for the same push from either; ``interval`` as there."""
    scale, lo, hi = _checked(scale, interval)
    if scale == 0.0:
        return denoiser
    table = schedule.alpha_bar

    def guided(x: Tensor, t: Tensor) -> Denoised:
        t = t.to(x.device)
        active = _active(t, len(table), lo, hi)
        d = denoiser(x, t)
        if not bool(active.any()):
            return d
        ab = table_on(table, x.device)[t]
        gain = append_dims((scale * active).to(x.dtype), x.ndim)
        with torch.enable_grad():
            xg = x.detach().float().requires_grad_(True)
            (grad,) = torch.autograd.grad(_per_sample(objective(xg, t), x.shape[0]).sum(), xg)
        x0_new = d.x0 + gain * _noisy_weight(ab, x) * grad.to(d.x0.dtype)
        return Denoised(x0_new, eps_from_x0(x, x0_new, ab), d.var_frac)

    return guided


def _checked(scale: float, interval: tuple[float, float]) -> tuple[float, float, float]:
    scale = float(scale)
    if scale < 0 or scale != scale:
        raise ValueError(f"gradient guidance scale must be >= 0, got {scale}")
    lo, hi = (float(v) for v in interval)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"gradient guidance interval must satisfy 0 <= lo < hi <= 1, got ({lo:g}, {hi:g})")
    return scale, lo, hi


def _active(t: Tensor, steps: int, lo: float, hi: float) -> Tensor:
    """Which samples are guided: their timestep fraction (t + 1) / T lies in [lo, hi]. Raises under inference mode,
    whose tensors cannot be differentiated (``enable_grad`` cannot lift it)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("gradient guidance differentiates the sampler's estimate: sample under torch.no_grad(), "
                           "not torch.inference_mode()")  # fmt: skip
    frac = (t + 1).float() / steps
    return (frac >= lo) & (frac <= hi)


def _noisy_weight(ab: Tensor, x: Tensor) -> Tensor:
    """σ_t² α_t per sample, shaped like ``x``: the weighting of a gradient with respect to x_t (module docs)."""
    return append_dims(((1 - ab) * ab.sqrt()).to(x.dtype), x.ndim)


def _per_sample(values: Tensor, batch: int) -> Tensor:
    if values.shape != (batch,):
        raise ValueError(f"the guidance objective must return one value per sample ({batch},), "
                         f"got {tuple(values.shape)}")  # fmt: skip
    return values


def embedding_objective(encode_image: Callable[[Tensor], Tensor], target: Tensor) -> Callable[[Tensor], Tensor]:
    """f(x̂0) = cos(encode_image(x̂0), target) per sample: how close the estimate's image embedding is to ``target``
    (for the decoder, the z_i it was given; §2.1 trains it to invert exactly this map)."""

    def cosine(x0: Tensor) -> Tensor:
        return torch.nn.functional.cosine_similarity(encode_image(x0).float(), target.float(), dim=-1)

    return cosine


def noised_embedding_objective(
    encode_noised: Callable[[Tensor, Tensor], Tensor], target: Tensor
) -> Callable[[Tensor, Tensor], Tensor]:
    """f(x_t, t) = cos(encode_noised(x_t, t), target) per sample: the objective of :func:`noised_gradient_guidance`
    with a noise-aware image tower (``unclip.clip.noised.NoisedImageEncoder``)."""

    def cosine(x: Tensor, t: Tensor) -> Tensor:
        return torch.nn.functional.cosine_similarity(encode_noised(x, t).float(), target.float(), dim=-1)

    return cosine
