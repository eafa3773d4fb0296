"""Learning-rate schedules as tiny pure functions of the step (STYLE.md practice 4).

``step`` is the 0-based index of the optimizer update about to be made, so the first update of a run with
warm-up uses ``lr / warmup_steps`` rather than zero (a zero step would waste the first batch). Because the
rate is a function of the step alone, the schedule's whole state is the step counter the checkpoint holds.
"""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps`` updates, then constant or a half-cosine decay.

    The cosine reaches ``base_lr * min_lr_ratio`` at update ``total_steps - 1`` (the last one), following
    Loshchilov & Hutter (2017) without restarts.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected 'cosine' or 'constant'")
    span = total_steps - 1 - warmup_steps
    progress = 1.0 if span <= 0 else min(1.0, (step - warmup_steps) / span)
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
