"""Exponential moving average of the weights, the copy that diffusion models are sampled from.

With a fixed decay close to 1 the average would remember the random initialisation for thousands of steps,
so the decay warms up: ``decay(n) = min(max_decay, 1 - (1 + n) ** -power)`` after ``n`` updates (the
power-law warm-up of Karras et al.'s EDM training code and diffusers' ``EMAModel``; ``power = 2/3`` reaches
0.999 after about 31k updates, 0.99 after 1k). ``power = 0`` turns the warm-up off.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


def ema_decay_at(num_updates: int, max_decay: float, power: float) -> float:
    """The decay applied at the update that follows ``num_updates`` earlier ones."""
    if power <= 0:
        return max_decay
    return min(max_decay, 1.0 - (1.0 + num_updates) ** -power)


class EMA:
    """Shadow copy of a module's floating parameters and buffers, kept in float32 on the module's device.

    ``update`` does ``shadow = decay * shadow + (1 - decay) * param`` for parameters; buffers (e.g. norm
    statistics) are copied as they are, since averaging running statistics has no meaning. The shadow is a
    plain name -> tensor dict so the checkpoint stores it like any state dict.
    """

    def __init__(self, model: nn.Module, max_decay: float = 0.9999, power: float = 2.0 / 3.0) -> None:
        if not 0.0 <= max_decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {max_decay}")
        self.max_decay = max_decay
        self.power = power
        self.num_updates = 0
        self._groups_of: tuple[tuple[int, ...], tuple[list[tuple[Tensor, Tensor]], ...]] | None = None
        self._param_names = {name for name, _ in model.named_parameters()}
        self.shadow: dict[str, Tensor] = {
            name: t.detach().to(torch.float32 if t.is_floating_point() else t.dtype).clone()
            for name, t in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        decay = ema_decay_at(self.num_updates, self.max_decay, self.power)
        same, cast, copied = self._groups(model)
        # One fused kernel per list instead of one launch per tensor: on an accelerator a small network's step is
        # bounded by launches, and a per-tensor loop over a few hundred tensors is a good part of them.
        if same:
            torch._foreach_lerp_([s for s, _ in same], [t for _, t in same], 1.0 - decay)  # s + (1 - decay) (t - s)
        for s, t in cast:  # a parameter not stored in float32: averaged in float32
            s.lerp_(t.to(s.dtype), 1.0 - decay)
        if copied:
            torch._foreach_copy_([s for s, _ in copied], [t for _, t in copied])
        self.num_updates += 1
        return decay

    def _groups(self, model: nn.Module) -> tuple[list[tuple[Tensor, Tensor]], ...]:
        """(shadow, live tensor) pairs: parameters averaged in place, parameters averaged through a cast, and
        buffers copied. Built once and reused while the module's tensors keep their storage (the optimizer updates
        them in place); a module moved or reloaded since gets new pairs."""
        where = (id(model), *(t.data_ptr() for t in itertools.chain(model.parameters(), model.buffers())))
        if self._groups_of is None or self._groups_of[0] != where:
            same, cast, copied = [], [], []
            for name, t in model.state_dict().items():
                s = self.shadow[name]
                if name not in self._param_names or not t.is_floating_point():
                    copied.append((s, t))
                else:
                    (same if t.dtype == s.dtype else cast).append((s, t))
            self._groups_of = (where, (same, cast, copied))
        return self._groups_of[1]

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor], num_updates: int) -> None:
        missing, unexpected = set(self.shadow) - set(state), set(state) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not match the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        for name, t in state.items():
            if t.shape != self.shadow[name].shape:
                raise ValueError(
                    f"EMA tensor {name!r} has shape {tuple(t.shape)}, model has {tuple(self.shadow[name].shape)}"
                )
            self.shadow[name].copy_(t)
        self.num_updates = int(num_updates)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (a separate copy, used for sampling and export)."""
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()}, strict=True)
