"""What a network predicts, and how its raw output becomes the denoised estimate every sampler consumes.

The network's ``forward(x_t, t, **cond)`` never changes; the parameterization lives in a thin wrapper
(STYLE.md practice 2). With ``alpha = sqrt(alpha_bar)`` and ``sigma = sqrt(1 - alpha_bar)``::

    x_t = alpha x_0 + sigma eps          (forward process)
    v   = alpha eps - sigma x_0          (Salimans & Ho 2022, §4)

so ``x_0 = alpha x_t - sigma v`` and ``eps = sigma x_t + alpha v``. The paper's decoder predicts ``eps`` with
learned variance (GLIDE); its prior predicts ``x_0`` (§2.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from unclip.diffusion._util import append_dims
from unclip.diffusion.schedules import NoiseSchedule
from unclip.transfers import table_on

PREDICTIONS = ("eps", "x0", "v")


class Denoised(NamedTuple):
    """A denoiser's estimate at ``(x_t, t)``.

    ``x0`` and ``eps`` are both carried so that no sampler divides by a vanishing ``alpha`` or ``sigma`` to
    recover one from the other. ``var_frac`` is the learned-range variance interpolation in [0, 1] (improved
    DDPM Eq. 15) or ``None`` for a fixed variance.
    """

    x0: Tensor
    eps: Tensor
    var_frac: Tensor | None = None


class Denoiser(Protocol):
    """What samplers drive: the estimate at ``(x_t, t)``, ``t`` holding one training timestep per sample."""

    def __call__(self, x: Tensor, t: Tensor) -> Denoised: ...


def _alpha_sigma(alpha_bar: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    ab = append_dims(alpha_bar.to(like.dtype), like.ndim)
    return ab.sqrt(), (1.0 - ab).sqrt()


def to_x0_eps(prediction: str, out: Tensor, x_t: Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
    """Turn a prediction of kind ``prediction`` at ``(x_t, alpha_bar)`` into ``(x0, eps)``."""
    alpha, sigma = _alpha_sigma(alpha_bar, x_t)
    if prediction == "eps":
        return (x_t - sigma * out) / alpha, out
    if prediction == "x0":
        return out, (x_t - alpha * out) / sigma
    if prediction == "v":
        return alpha * x_t - sigma * out, sigma * x_t + alpha * out
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {', '.join(PREDICTIONS)}")


def from_x0_eps(prediction: str, x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """The quantity a ``prediction``-network outputs for ``(x0, eps)``: also its regression target."""
    alpha, sigma = _alpha_sigma(alpha_bar, x0)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * eps - sigma * x0
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {', '.join(PREDICTIONS)}")


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: Tensor) -> Tensor:
    alpha, sigma = _alpha_sigma(alpha_bar, x_t)
    return (x_t - alpha * x0) / sigma


def split_learned_variance(out: Tensor) -> tuple[Tensor, Tensor]:
    """Split a learned-variance output along dim 1 into (prediction, var_frac in [0, 1]).

    The network emits ``2C`` channels (images) or ``2D`` features (embeddings); the second half ``v`` in
    [-1, 1] interpolates the log variance between beta_t and the posterior variance (improved DDPM Eq. 15).
    """
    if out.shape[1] % 2:
        raise ValueError(f"a learned-variance output needs an even size on dim 1, got shape {tuple(out.shape)}")
    pred, v = out.chunk(2, dim=1)
    return pred, (v + 1) / 2


def posterior_log_variance_bounds(alpha_bar: Tensor, alpha_bar_prev: Tensor) -> tuple[Tensor, Tensor]:
    """log of (posterior variance beta~_t, beta_t) for the step alpha_bar -> alpha_bar_prev (any respacing).

    beta_t = 1 - alpha_bar/alpha_bar_prev and beta~_t = beta_t (1 - alpha_bar_prev)/(1 - alpha_bar)
    (Ho et al. 2020 Eq. 7). At the last step beta~ is 0, so its log is clipped to the next one's, as improved
    DDPM does, to keep the interpolation finite.
    """
    beta = 1.0 - alpha_bar / alpha_bar_prev
    beta_tilde = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    floor = torch.where(beta_tilde > 0, beta_tilde, torch.full_like(beta_tilde, float("inf"))).min()
    floor = torch.where(torch.isfinite(floor), floor, beta.min())  # on the device: no wait in a training step
    return beta_tilde.clamp_min(floor).log(), beta.log()


@dataclass(frozen=True)
class Parameterization:
    """How a raw network output is read: prediction kind and whether variance is learned."""

    prediction: str = "eps"
    learned_variance: bool = False

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {', '.join(PREDICTIONS)}")

    def denoised(self, out: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Denoised:
        var_frac = None
        if self.learned_variance:
            out, var_frac = split_learned_variance(out)
        if out.shape != x_t.shape:
            raise ValueError(
                f"network output has shape {tuple(out.shape)} but x_t has {tuple(x_t.shape)}"
                + (" (learned variance doubles dim 1)" if self.learned_variance else "")
            )
        x0, eps = to_x0_eps(self.prediction, out, x_t, alpha_bar)
        return Denoised(x0, eps, var_frac)


class ModelDenoiser:
    """Wrap a network ``net(x_t, t, **cond) -> raw output`` into a conditional denoiser.

    ``denoiser(x, t, cond)`` returns :class:`Denoised`; ``cond`` is a dict of batched tensors (or ``None``).
    Guidance combinators (``unclip.diffusion.guidance``) turn this into the ``(x, t)`` denoiser samplers take.
    """

    def __init__(
        self, net: nn.Module | Callable[..., Tensor], schedule: NoiseSchedule, param: Parameterization
    ) -> None:
        self.net = net
        self.schedule = schedule
        self.param = param
        self._alpha_bar = schedule.alpha_bar

    def __call__(self, x: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Denoised:
        out = self.net(x, t, **(cond or {}))
        # table_on: a plain .to() here would wait, every sampler step, for the forward pass just queued
        alpha_bar = table_on(self._alpha_bar, x.device)[t.to(x.device)]
        return self.param.denoised(out, x, alpha_bar)


def clamp_x0(denoiser: Denoiser, schedule: NoiseSchedule, lo: float = -1.0, hi: float = 1.0) -> Denoiser:
    """Clip the x0 estimate to the data range and re-derive eps from it (guided-diffusion's clip_denoised).

    Apply after guidance: guided x0 estimates overshoot the data range at high scales (GLIDE §3).
    """
    table = schedule.alpha_bar

    def clamped(x: Tensor, t: Tensor) -> Denoised:
        d = denoiser(x, t)
        x0 = d.x0.clamp(lo, hi)
        return Denoised(x0, eps_from_x0(x, x0, table_on(table, x.device)[t.to(x.device)]), d.var_frac)

    return clamped
