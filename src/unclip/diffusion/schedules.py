"""Noise schedules of the discrete variance-preserving process and the grids samplers walk.

One time convention for every sampler (DESIGN.md §2): integer training timesteps ``t = 0 … T-1`` (``T = 1000``)
with ``x_t = sqrt(alpha_bar[t]) x_0 + sqrt(1 - alpha_bar[t]) eps``. A sampler walks a :class:`TimestepGrid`: a
descending subset of those timesteps ("respacing", Nichol & Dhariwal 2021 §4), and the network is always
called with the original training timestep.

A schedule name, once shipped, never changes meaning (STYLE.md practice 4): add a new name instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SCHEDULES = ("cosine", "linear")
SPACINGS = ("linspace", "leading", "trailing")


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal (2021) Eq. 17: alpha_bar(t) = cos²((t/T + s)/(1 + s) · π/2), betas clipped at 0.999.

    Used by the paper's decoder, prior and first upsampler (Appendix C).
    """

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. (2020) linear schedule, scaled so any ``num_steps`` spans the same total noise as 1000 steps.

    Used by the paper's second upsampler (Appendix C).
    """
    scale = 1000 / num_steps
    return torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)


@dataclass(frozen=True)
class TimestepGrid:
    """The timesteps a sampler visits, in the order visited, with ``alpha_bar`` at each (float64).

    For sampling ``t`` descends (e.g. ``999 … 0``); the step after the last one lands on clean data
    (alpha_bar = 1). Inversion walks the same grid backwards.
    """

    t: Tensor  # (N,) int64 training timesteps, strictly descending
    alpha_bar: Tensor  # (N,) float64, alpha_bar[t]

    def __len__(self) -> int:
        return int(self.t.numel())

    def alpha_bar_next(self) -> Tensor:
        """alpha_bar of the state each step lands on: the next grid entry, then 1 (clean data)."""
        return torch.cat([self.alpha_bar[1:], self.alpha_bar.new_ones(1)])


@dataclass(frozen=True)
class NoiseSchedule:
    """alpha_bar over the training timesteps, in float64 (the maths is done in float64, then cast)."""

    name: str
    betas: Tensor

    @classmethod
    def named(cls, name: str, num_steps: int = 1000) -> NoiseSchedule:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        if name == "cosine":
            return cls(name, cosine_betas(num_steps))
        if name == "linear":
            return cls(name, linear_betas(num_steps))
        raise ValueError(f"unknown noise schedule {name!r}; expected one of {', '.join(SCHEDULES)}")

    @property
    def num_steps(self) -> int:
        return int(self.betas.numel())

    @property
    def alpha_bar(self) -> Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def timesteps(self, n: int, spacing: str = "linspace") -> Tensor:
        """``n`` training timesteps in descending order.

        - ``linspace``: evenly spread from ``T-1`` down to ``0``, both included (improved DDPM's
          ``space_timesteps`` with a plain count, used by the paper and Karlo);
        - ``leading``: ``0, k, 2k, …`` with ``k = T // n`` (DDIM's original spacing; never reaches ``T-1``);
        - ``trailing``: ``T-1, T-1-k, …`` with ``k = T / n`` (starts at the noisiest step; may skip ``0``).
        """
        T = self.num_steps
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"number of sampling steps must be an integer, got {n!r}")
        if not 1 <= n <= T:
            raise ValueError(f"number of sampling steps must be between 1 and {T} (the training steps), got {n}")
        if spacing == "linspace":
            t = [T - 1] if n == 1 else [round(i * (T - 1) / (n - 1)) for i in range(n)]
        elif spacing == "leading":
            t = list(range(0, T, T // n))[:n]
        elif spacing == "trailing":
            t = [round(T - i * T / n) - 1 for i in range(n)]
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
        return torch.tensor(sorted(set(t), reverse=True), dtype=torch.int64)

    def grid(self, n: int, spacing: str = "linspace") -> TimestepGrid:
        """The grid for an ``n``-step sampler (respacing, Nichol & Dhariwal 2021 §4)."""
        t = self.timesteps(n, spacing)
        return TimestepGrid(t=t, alpha_bar=self.alpha_bar[t])

    def grid_below(self, n: int, strength: float) -> TimestepGrid:
        """``n`` timesteps evenly spaced from ``round(strength × (T − 1))`` down to 0 (fewer where they would
        coincide): the grid of a sampler that starts from a noised image instead of pure noise (SDEdit)."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must lie in (0, 1], got {strength!r}")
        if n < 1:
            raise ValueError(f"a sampler needs at least one step, got {n}")
        top = round(strength * (self.num_steps - 1))
        t = [top] if n == 1 else [round(i * top / (n - 1)) for i in range(n)]  # ``timesteps``' linspace rule
        return self.grid_from(sorted(set(t)))

    def grid_from(self, timesteps: Tensor | list[int]) -> TimestepGrid:
        """A grid from explicit timesteps (any order given; visited in descending order)."""
        t = torch.as_tensor(timesteps, dtype=torch.int64).flatten()
        if t.numel() == 0:
            raise ValueError("a timestep grid needs at least one timestep, got none")
        if int(t.min()) < 0 or int(t.max()) >= self.num_steps:
            raise ValueError(f"timesteps must lie in [0, {self.num_steps - 1}], got {t.tolist()}")
        if t.unique().numel() != t.numel():
            raise ValueError(f"timesteps must be distinct, got {t.tolist()}")
        t = t.sort(descending=True).values
        return TimestepGrid(t=t, alpha_bar=self.alpha_bar[t])
