"""Per-sample randomness for diffusion stages: timesteps, noise and coin flips drawn from each sample's seed.

Drawing sample i's t and noise from its own generator (``Batch.generators``) makes a step's result the same
however the global batch is split over processes and accumulation steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unclip.train.stage import sample_generators
from unclip.transfers import to_device


def draw_timesteps_and_noise(
    generators: list[torch.Generator], num_steps: int, shape: tuple[int, ...], device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """``t`` uniform over the training steps and standard normal ``noise`` of ``shape`` (batch first)."""
    t = torch.stack([torch.randint(0, num_steps, (), generator=g) for g in generators])
    noise = torch.stack([torch.randn(shape[1:], generator=g) for g in generators])
    return to_device(t, device), to_device(noise, device)


def draw_flags(generators: list[torch.Generator], p: float, device: torch.device | str) -> Tensor:
    """One Bernoulli(p) flag per sample (condition dropout)."""
    return to_device(torch.stack([torch.rand((), generator=g) for g in generators]) < p, device)


def step_draws(
    seeds: Tensor, num_steps: int, shape: tuple[int, ...], flags: dict[str, tuple[int, float]] | None = None
) -> dict[str, Tensor]:
    """A diffusion training step's per-sample draws, on the CPU: ``t`` and ``noise`` of ``shape`` from each sample's
    generator (salt 0), and a Bernoulli flag per ``name: (salt, p)``. A stage's batch_extras calls it in the loader's
    workers, so the host does not spend the start of every step on a few hundred small generator calls while the
    device waits; the step calls it itself for a batch made by hand. The numbers depend on the seeds only."""
    t, noise = draw_timesteps_and_noise(sample_generators(seeds), num_steps, shape, "cpu")
    out = {"t": t, "noise": noise}
    for name, (salt, p) in (flags or {}).items():
        out[name] = draw_flags(sample_generators(seeds, salt), p, "cpu")
    return out
