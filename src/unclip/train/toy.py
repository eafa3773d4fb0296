"""``toy``: a tiny unconditional image denoiser, the engine's reference stage until the real stages land.

It exercises everything a generative stage needs (diffusion loss with per-sample noise, a sample grid) at a
size that trains on a CPU in seconds, and is the reference model of ``benchmarks/train_throughput.py``. It
knows nothing of captions; the real decoder and upsamplers replace it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unclip.diffusion import DiffusionLoss, ModelDenoiser, NoiseSchedule, Parameterization, sample_ddim
from unclip.models.unet_blocks import timestep_embedding
from unclip.train.config import TrainConfig
from unclip.train.diffusion_draws import draw_timesteps_and_noise
from unclip.train.stage import Batch, Preset, Stage, StepOutput


@dataclass
class ToyConfig:
    resolution: int = 16
    channels: int = 32
    depth: int = 2  # residual conv blocks
    schedule: str = "cosine"
    prediction: str = "eps"
    sample_steps: int = 20

    def __post_init__(self) -> None:
        if self.resolution < 4 or self.channels < 1 or self.depth < 1:
            raise ValueError(f"toy config needs resolution >= 4, channels >= 1 and depth >= 1, got {self}")


class _Block(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(8, ch), ch)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.emb = nn.Linear(ch, ch)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.conv(torch.nn.functional.silu(self.norm(h) + self.emb(emb)[:, :, None, None]))


class ToyDenoiser(nn.Module):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.ch = ch
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(ch, ch), nn.SiLU(), nn.Linear(ch, ch))
        self.blocks = nn.ModuleList(_Block(ch) for _ in range(cfg.depth))
        self.out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time(timestep_embedding(t, self.ch))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


class ToyDenoiserStage(Stage[ToyConfig]):
    name = "toy"
    config_type = ToyConfig

    def presets(self) -> dict[str, Preset[ToyConfig]]:
        return {
            "tiny": Preset(
                ToyConfig(),
                TrainConfig(steps=200, batch_size=16, lr=1e-3, warmup_steps=10, checkpoint_every=100, ema_decay=0.999),
                "16 px, 32 channels: seconds on a CPU (tests, benchmark)",
            ),
            "small": Preset(
                ToyConfig(resolution=32, channels=64, depth=4),
                TrainConfig(steps=5000, batch_size=64, lr=5e-4, warmup_steps=200, checkpoint_every=500),
                "32 px, 64 channels: minutes on a CPU, learns Shapes-world colours and layouts",
            ),
        }

    def build(self, config: ToyConfig) -> nn.Module:
        return ToyDenoiser(config)

    def _diffusion(self, config: ToyConfig) -> tuple[NoiseSchedule, Parameterization]:
        return NoiseSchedule.named(config.schedule), Parameterization(config.prediction)

    def loss(self, model: nn.Module, batch: Batch, config: ToyConfig) -> StepOutput:
        schedule, param = self._diffusion(config)
        loss_fn = DiffusionLoss(schedule, param)
        x0 = batch.image
        # t and the noise of sample i come from sample i's own generator (see Batch.seed).
        t, noise = draw_timesteps_and_noise(batch.generators(), schedule.num_steps, x0.shape, x0.device)
        out = loss_fn(model, x0, t=t, noise=noise.to(x0.dtype))
        loss = out.loss.mean()
        return StepOutput(loss, {"mse": out.mse.detach().mean()})

    @torch.no_grad()
    def sample(self, model: nn.Module, config: ToyConfig, n: int, generator: torch.Generator) -> Tensor:
        schedule, param = self._diffusion(config)
        device = next(model.parameters()).device
        x = torch.randn((n, 3, config.resolution, config.resolution), generator=generator).to(device)
        denoiser = ModelDenoiser(model, schedule, param)
        grid = schedule.grid(config.sample_steps)
        return sample_ddim(lambda x_, t_: denoiser(x_, t_), x, grid, eta=0.0).clamp(-1, 1)
