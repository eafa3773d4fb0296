"""A tiny stage for the engine tests: an MLP denoiser over 8x8 images, with dropout.

Dropout makes the global torch RNG part of the training trajectory, so the exact-resume tests also check
that its state is saved and restored. ``python tiny_stage.py ARGS`` runs ``unclip ARGS`` with it registered.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from unclip.diffusion import DiffusionLoss, NoiseSchedule, Parameterization
from unclip.train import Batch, Preset, Stage, StepOutput, TrainConfig, register_stage
from unclip.train.diffusion_draws import draw_timesteps_and_noise


@dataclass
class TinyConfig:
    resolution: int = 8
    hidden: int = 64
    dropout: float = 0.1


class TinyNet(nn.Module):
    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        d = 3 * cfg.resolution**2
        self.t_embed = nn.Embedding(1000, cfg.hidden)
        self.inp = nn.Linear(d, cfg.hidden)
        self.mid = nn.Sequential(nn.SiLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU())
        self.out = nn.Linear(cfg.hidden, d)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.mid(self.inp(x.flatten(1)) + self.t_embed(t))
        return self.out(h).view_as(x)


class TinyStage(Stage[TinyConfig]):
    name = "tiny"
    config_type = TinyConfig

    def presets(self) -> dict[str, Preset[TinyConfig]]:
        return {
            "test": Preset(
                TinyConfig(),
                TrainConfig(steps=20, batch_size=8, lr=3e-3, warmup_steps=3, checkpoint_every=5, ema_decay=0.9),
            ),
            "wide": Preset(TinyConfig(hidden=128), TrainConfig(steps=20, batch_size=8)),
        }

    def build(self, config: TinyConfig) -> nn.Module:
        return TinyNet(config)

    def loss(self, model: nn.Module, batch: Batch, config: TinyConfig) -> StepOutput:
        loss_fn = DiffusionLoss(NoiseSchedule.named("cosine"), Parameterization("x0"))
        t, noise = draw_timesteps_and_noise(batch.generators(), 1000, batch.image.shape, batch.image.device)
        out = loss_fn(model, batch.image, t=t, noise=noise)
        return StepOutput(out.loss.mean(), {"mse": float(out.mse.detach().mean())})

    def sample(self, model: nn.Module, config: TinyConfig, n: int, generator: torch.Generator) -> Tensor:
        # One denoising jump from pure noise is enough to exercise the grid plumbing.
        x = torch.randn((n, 3, config.resolution, config.resolution), generator=generator)
        return model(x, torch.full((n,), 999)).clamp(-1, 1)


def register() -> None:
    register_stage("tiny", TinyStage, replace=True)


def make_folder(root: Path, n: int = 24, corrupt: int = 0, size: tuple[int, int] = (10, 12)) -> Path:
    """``n`` flat-coloured PNGs (easy to learn) with captions, plus ``corrupt`` files that cannot be decoded."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (*size, 3)).copy()).save(
            root / f"img{i:03d}.png"
        )
        (root / f"img{i:03d}.txt").write_text(f"picture number {i}")
    for i in range(corrupt):
        (root / f"bad{i:03d}.png").write_bytes(b"\x89PNG but not really")
        (root / f"bad{i:03d}.txt").write_text("broken")
    return root


if __name__ == "__main__":
    register()
    if os.environ.get("TINY_FAST_CLOCK_RANK") == os.environ.get("RANK", "0"):
        # This process's clock runs 1000 times fast, so it alone finds a time budget spent: the processes disagree
        # unless the engine makes them agree (test_train_ddp.py).
        import time

        real_clock = time.perf_counter
        time.perf_counter = lambda: 1000.0 * real_clock()
    from unclip.cli.main import main

    raise SystemExit(main(sys.argv[1:]))
