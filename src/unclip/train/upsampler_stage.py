"""``unclip train upsampler``: the §2.1 diffusion upsamplers, trained on corrupted low-resolution crops.

App. C: each upsampler trains on random crops of 1/4 of its target size (the data pipeline delivers full-size
images; the stage crops them) and runs on whole images at inference, which the convolution-only network with a
per-pixel norm makes exact. The low-resolution condition is the crop downsampled and corrupted: Gaussian blur
for 64→256, BSR for 256→1024 (``unclip.data.degradations``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unclip.data.degradations import corrupt
from unclip.diffusion import DiffusionLoss, NoiseSchedule, Parameterization, append_dims, check_weighting
from unclip.models.presets import upsampler_preset
from unclip.models.upsampler import Upsampler, UpsamplerConfig
from unclip.train.config import TrainConfig
from unclip.train.diffusion_draws import draw_timesteps_and_noise, step_draws
from unclip.train.stage import Batch, Preset, Stage, StepOutput, sample_generators
from unclip.transfers import table_on, to_device


@dataclass
class UpsamplerStageConfig:
    upsampler: UpsamplerConfig = field(default_factory=lambda: upsampler_preset("small", resolution=256))
    crop_fraction: int = 4  # train on crops of resolution / 4 (App. C)
    aug_max_t: int = 250  # with noise_aug: the low-res condition is noised to a level uniform below this
    sample_steps: int = 27  # App. C: 27 DDIM steps for 64→256
    loss_weighting: str = "uniform"  # or "min_snr" (Hang et al. 2023), as the decoder stage's
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        check_weighting(self.loss_weighting, self.min_snr_gamma)
        u = self.upsampler
        crop = u.resolution // self.crop_fraction if self.crop_fraction >= 1 else 0
        align = u.factor * u.unet.downsample_factor
        if self.crop_fraction < 1 or u.resolution % self.crop_fraction or crop % align:
            raise ValueError(
                f"crop size resolution / crop_fraction = {u.resolution} / {self.crop_fraction} must be a whole "
                f"multiple of factor × 2^(levels - 1) = {align}"
            )

    @property
    def crop(self) -> int:
        return self.upsampler.resolution // self.crop_fraction


def crops_and_conditions(images: Tensor, seeds: Tensor, config: UpsamplerStageConfig) -> dict[str, Tensor]:
    """Each image's random training crop (``high``, aligned to the U-Net's downsampling grid), its corrupted
    low-resolution condition (``low``) and the step's draws (``t``, ``noise``; with noise augmentation ``aug_level``,
    ``aug_noise``), from the per-sample seeds: the same wherever they are computed."""
    u = config.upsampler
    high = random_crops(images, config.crop, u.factor * u.unet.downsample_factor, sample_generators(seeds, 3))
    low = corrupt(high, u.factor, u.degradation, sample_generators(seeds, 4))
    out = {"high": high, "low": low, **step_draws(seeds, NoiseSchedule.named(u.schedule).num_steps, tuple(high.shape))}
    if u.noise_aug:  # the condition's own diffusion level and noise (salt 5)
        out["aug_level"], out["aug_noise"] = draw_timesteps_and_noise(
            sample_generators(seeds, 5), config.aug_max_t, tuple(low.shape), "cpu"
        )
    return out


def _micro_batch_pair(mb: Any, config: UpsamplerStageConfig) -> dict[str, Tensor]:
    out = crops_and_conditions(mb.image, mb.seed, config)
    out["image"] = out.pop("high")  # the crops replace the full images: only they are copied to the device
    return out


def random_crops(images: Tensor, size: int, align: int, generators: list[torch.Generator]) -> Tensor:
    """One ``size``² crop per image at a random offset that is a multiple of ``align`` (the downsampling grid)."""
    h, w = images.shape[-2:]
    out = []
    for img, g in zip(images, generators, strict=True):
        y = int(torch.randint(0, (h - size) // align + 1, (), generator=g)) * align
        x = int(torch.randint(0, (w - size) // align + 1, (), generator=g)) * align
        out.append(img[:, y : y + size, x : x + size])
    return torch.stack(out)


class UpsamplerStage(Stage[UpsamplerStageConfig]):
    name = "upsampler"
    config_type = UpsamplerStageConfig

    def presets(self) -> dict[str, Preset[UpsamplerStageConfig]]:
        return {
            "small": Preset(
                UpsamplerStageConfig(),
                TrainConfig(steps=20_000, batch_size=32, lr=1e-4, warmup_steps=500, ema_decay=0.9999, grad_clip=1.0,
                            checkpoint_every=2000, sample_every=2000),
                "64→256 with blur corruption, 8M parameters: an hour or two on one GPU",
            ),
            "mini": Preset(
                UpsamplerStageConfig(upsampler_preset("mini", resolution=128), sample_steps=10),
                TrainConfig(steps=1500, batch_size=16, lr=5e-4, warmup_steps=50, ema_decay=0.999, grad_clip=1.0,
                            checkpoint_every=500, sample_every=0),
                "32→128 on 32 px crops: the CPU-trained bundled model (minutes on 2 cores)",
            ),
            "compact": Preset(
                UpsamplerStageConfig(upsampler_preset("compact", resolution=128), sample_steps=10),
                TrainConfig(steps=100_000, batch_size=64, lr=2e-4, warmup_steps=500, lr_schedule="constant",
                            ema_decay=0.9995, grad_clip=1.0, mixed_precision="bf16", num_workers=4,
                            checkpoint_every=2000, sample_every=0),
                "32→128, 2.6M parameters: the bundled model's upsampler (a time budget on one GPU)",
            ),
            "tiny": Preset(
                UpsamplerStageConfig(upsampler_preset("tiny", resolution=64), sample_steps=5),
                TrainConfig(steps=100, batch_size=4, lr=1e-3, warmup_steps=5, ema_decay=0.99, checkpoint_every=50),
                "16→64: seconds on a CPU (tests)",
            ),
            "base-1024": Preset(
                UpsamplerStageConfig(upsampler_preset("base", resolution=1024), sample_steps=15),
                TrainConfig(steps=500_000, batch_size=32, lr=1e-4, warmup_steps=2000, ema_decay=0.9999, grad_clip=1.0,
                            mixed_precision="bf16", checkpoint_every=5000, sample_every=5000),
                "256→1024 with BSR corruption and a linear schedule (App. C): GPUs and real data",
            ),
        }  # fmt: skip

    def build(self, config: UpsamplerStageConfig) -> nn.Module:
        return Upsampler(config.upsampler)

    def export(self, model: nn.Module, config: UpsamplerStageConfig, folder: str | Path) -> Path:
        from unclip.models.checkpoint import save_pretrained

        return save_pretrained(model, folder)  # type: ignore[arg-type]

    def resolution(self, config: UpsamplerStageConfig) -> int:
        return config.upsampler.resolution

    def batch_extras(self, config: UpsamplerStageConfig):  # -> Callable[[MicroBatch], dict]
        # Cropping and corrupting (blur, or BSR's chain of resizes, noise and JPEG) are CPU work on the images the
        # worker already holds: done there, they overlap the accelerator's step instead of stalling it.
        return partial(_micro_batch_pair, config=config)

    def loss(self, model: nn.Module, batch: Batch, config: UpsamplerStageConfig) -> StepOutput:
        u, device = config.upsampler, batch.image.device
        # The engine's batches carry their crops and conditions from the loader's workers (batch_extras); a batch
        # made by hand gets the same ones here.
        if batch.extra:  # batch.image holds the crops the worker cut
            pair, high = batch.extra, batch.image
        else:
            pair = crops_and_conditions(batch.image.cpu(), batch.seed, config)
            high = to_device(pair["high"], device)
        low, t, noise = (to_device(pair[k], device) for k in ("low", "t", "noise"))
        schedule = NoiseSchedule.named(u.schedule)
        cond: dict[str, Tensor] = {"low_res": low}
        if u.noise_aug:
            # Noise-level augmentation: the condition is itself diffused to a random level the network is told.
            level, aug_noise = to_device(pair["aug_level"], device), to_device(pair["aug_noise"], device)
            ab = append_dims(table_on(schedule.alpha_bar, device)[level].to(low.dtype), low.ndim)
            cond = {"low_res": ab.sqrt() * low + (1 - ab).sqrt() * aug_noise, "aug_level": level}
        loss_fn = DiffusionLoss(
            schedule, Parameterization("eps", u.learned_variance),
            weighting=config.loss_weighting, min_snr_gamma=config.min_snr_gamma,
        )  # fmt: skip
        out = loss_fn(model, high, cond, t=t, noise=noise)
        return StepOutput(out.loss.mean(), {"mse": out.mse.detach().mean()})

    def sample(
        self, model: nn.Module, config: UpsamplerStageConfig, n: int, generator: torch.Generator
    ) -> Tensor | None:
        """Held-out Shapes-world images: bicubic from the low resolution (top) and the upsampler's (bottom)."""
        from unclip.data.shapes.batch import render_batch
        from unclip.diffusion import sample_ddim
        from unclip.models.upsampler import upsampler_denoiser

        u = config.upsampler
        device = next(model.parameters()).device
        _, high = render_batch(max(1, n // 2), u.resolution, split="val")
        low = corrupt(high, u.factor, "none").to(device)
        with torch.no_grad():
            den, schedule = upsampler_denoiser(model, low)
            x_T = torch.randn(high.shape, generator=generator).to(device)
            out = sample_ddim(den, x_T, schedule.grid(config.sample_steps))
            bicubic = torch.nn.functional.interpolate(low, size=u.resolution, mode="bicubic").clamp(-1, 1)
        return torch.cat([bicubic, out.clamp(-1, 1)])[:n]
