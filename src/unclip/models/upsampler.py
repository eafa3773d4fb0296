"""Diffusion upsamplers 64→256 and 256→1024 (§2.1): conditioned on the low-resolution image only.

The noisy high-resolution image is concatenated with the low-resolution condition upsampled (bicubic) to
the same size. No attention, so the network is convolutional and runs at full size at inference after
training on crops of 1/4 of the target size; with the ``channel`` norm it computes exactly the same thing on a
crop as on the full image away from the borders. Optional noise-level conditioning (the low-resolution image
noised to a level that is embedded like a timestep) lets sampling trade fidelity for robustness.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.models.unet import UNet, UNetConfig
from unclip.models.unet_blocks import timestep_embedding


@dataclass
class UpsamplerConfig:
    factor: int = 4
    resolution: int = 256  # output side at inference
    learned_variance: bool = False
    schedule: str = "cosine"  # App. C: cosine for 64→256, linear for 256→1024
    degradation: str = "blur"  # App. C: Gaussian blur for 64→256, BSR for 256→1024
    noise_aug: bool = False
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=6, attention_levels=(), norm="channel"))

    def __post_init__(self) -> None:
        if self.factor < 2:
            raise ValueError(f"factor must be >= 2, got {self.factor}")
        if self.resolution % (self.factor * self.unet.downsample_factor):
            raise ValueError(
                f"resolution {self.resolution} must be divisible by factor × 2^(levels - 1) = "
                f"{self.factor * self.unet.downsample_factor}"
            )
        want = (6, 6 if self.learned_variance else 3)
        if (self.unet.in_channels, self.unet.out_channels) != want:
            raise ValueError(
                f"upsampler U-Net needs in/out channels {want}, got "
                f"({self.unet.in_channels}, {self.unet.out_channels}); build it with upsampler_config()"
            )

    @property
    def low_resolution(self) -> int:
        return self.resolution // self.factor


def upsampler_config(
    *, factor: int = 4, resolution: int = 256, learned_variance: bool = False, **options: object
) -> UpsamplerConfig:
    names = {"schedule", "degradation", "noise_aug"}
    own = {k: v for k, v in options.items() if k in names}
    base = UNetConfig(
        **{"attention_levels": (), "norm": "channel", **{k: v for k, v in options.items() if k not in names}}
    )  # type: ignore[arg-type]
    unet = replace(base, in_channels=6, out_channels=6 if learned_variance else 3)
    return UpsamplerConfig(factor=factor, resolution=resolution, learned_variance=learned_variance, unet=unet, **own)  # type: ignore[arg-type]


class Upsampler(nn.Module):
    """``forward(x_t, t, low_res, aug_level=None) -> raw output``; ``low_res`` is (B, 3, H/f, W/f) in [-1, 1]."""

    def __init__(self, config: UpsamplerConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet)
        if config.noise_aug:
            mc = config.unet.model_channels
            self.aug_emb = nn.Sequential(
                nn.Linear(mc, config.unet.emb_dim), nn.SiLU(), nn.Linear(config.unet.emb_dim, config.unet.emb_dim)
            )

    def condition(self, low_res: Tensor, size: tuple[int, int]) -> Tensor:
        f = self.config.factor
        if low_res.ndim != 4 or low_res.shape[1] != 3 or (low_res.shape[-2] * f, low_res.shape[-1] * f) != tuple(size):
            raise ValueError(
                f"low-resolution input must have shape (B, 3, {size[0] // f}, {size[1] // f}) for a ×{f} upsampler "
                f"producing {tuple(size)}, got {tuple(low_res.shape)}"
            )
        return F.interpolate(low_res, size=size, mode="bicubic", align_corners=False)

    def forward(self, x: Tensor, t: Tensor, low_res: Tensor, aug_level: Tensor | None = None) -> Tensor:
        cond = self.condition(low_res, (x.shape[-2], x.shape[-1])).to(x.dtype)
        extra = None
        if self.config.noise_aug:
            level = aug_level if aug_level is not None else torch.zeros(x.shape[0], device=x.device)
            extra = self.aug_emb(timestep_embedding(level, self.config.unet.model_channels).to(x.dtype))
        elif aug_level is not None:
            raise ValueError("aug_level given but this upsampler was built without noise_aug")
        return self.unet(torch.cat([x, cond], dim=1), t, extra_emb=extra)


# How the low-resolution image reaches the network at inference. "trained": through the deterministic part of the
# corruption the upsampler was trained on (App. C's Gaussian blur for 64→256), so it sees the inputs it learned
# from; a network trained to undo that blur over-sharpens a clean input into halos around every edge (the bundled
# 32→128 upsampler on 1,000 held-out images: docs/results.md). BSR's corruption is random, there for robustness
# to the decoder's artefacts, and is not applied. "clean": the image as given.
UPSAMPLER_CONDITIONS = ("trained", "clean")


def inference_condition(config: UpsamplerConfig, low_res: Tensor, condition: str = "trained") -> Tensor:
    """``low_res`` as the network should see it at inference (see ``UPSAMPLER_CONDITIONS``)."""
    if condition not in UPSAMPLER_CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(UPSAMPLER_CONDITIONS)}, got {condition!r}")
    from unclip.data.degradations import fixed_corruption

    return fixed_corruption(low_res, config.degradation) if condition == "trained" else low_res


def upsampler_denoiser(upsampler: Upsampler, low_res: Tensor, condition: str = "trained"):  # -> (Denoiser, schedule)
    """The (x, t) denoiser samplers drive for ``low_res``: eps-parameterized, x0 clamped to the image range, the
    condition prepared by :func:`inference_condition`, and (with noise-level augmentation) told it is clean."""
    from unclip.diffusion import ModelDenoiser, NoiseSchedule, Parameterization, clamp_x0, conditioned

    cfg = upsampler.config
    low_res = inference_condition(cfg, low_res, condition)
    schedule = NoiseSchedule.named(cfg.schedule)
    den = ModelDenoiser(upsampler, schedule, Parameterization("eps", cfg.learned_variance))
    cond: dict[str, Tensor] = {"low_res": low_res}
    if cfg.noise_aug:
        cond["aug_level"] = torch.zeros(low_res.shape[0], dtype=torch.long, device=low_res.device)
    return clamp_x0(conditioned(den, cond), schedule), schedule
