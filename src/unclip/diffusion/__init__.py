"""Shape-agnostic Gaussian diffusion (DESIGN.md §2, layer 1).

The same code diffuses a ``(B, D)`` CLIP embedding for the prior and a ``(B, C, H, W)`` image for the
decoder: schedules and respacing, parameterizations, losses, samplers over a denoiser callable, and the
guidance combinator. Nothing here knows about images, text or CLIP.
"""

from unclip.diffusion._util import append_dims, generators_from_seeds, mean_flat, randn, randn_like
from unclip.diffusion.guidance import cat_conditions, conditioned, guided
from unclip.diffusion.losses import WEIGHTINGS, DiffusionLoss, LossOutput, check_weighting, min_snr_weight
from unclip.diffusion.parameterization import (
    PREDICTIONS,
    Denoised,
    Denoiser,
    ModelDenoiser,
    Parameterization,
    clamp_x0,
    from_x0_eps,
    to_x0_eps,
)
from unclip.diffusion.samplers import (
    SAMPLERS,
    SamplerStep,
    get_sampler,
    invert_ddim,
    listen_to_steps,
    predict_mmse,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sampling_stage,
)
from unclip.diffusion.schedules import SCHEDULES, SPACINGS, NoiseSchedule, TimestepGrid

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "SPACINGS",
    "WEIGHTINGS",
    "Denoised",
    "Denoiser",
    "DiffusionLoss",
    "LossOutput",
    "ModelDenoiser",
    "NoiseSchedule",
    "Parameterization",
    "SamplerStep",
    "TimestepGrid",
    "append_dims",
    "cat_conditions",
    "check_weighting",
    "clamp_x0",
    "conditioned",
    "from_x0_eps",
    "generators_from_seeds",
    "get_sampler",
    "guided",
    "invert_ddim",
    "listen_to_steps",
    "mean_flat",
    "min_snr_weight",
    "predict_mmse",
    "randn",
    "randn_like",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sampling_stage",
    "to_x0_eps",
]
