"""Typed training configuration (STYLE.md practice 7): plain dataclasses, JSON only as their serialization.

A run is described by a :class:`RunConfig`: which stage, which preset, the stage's own model config, the
:class:`TrainConfig` of the loop and the data spec. The run folder stores it as ``config.json``; ``--resume``
compares the stored one with the requested one field by field and refuses a mismatch before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from unclip.model_folder import config_from_dict

LR_SCHEDULES = ("cosine", "constant")
MIXED_PRECISIONS = ("no", "bf16", "fp16")

T = TypeVar("T")


@dataclass
class TrainConfig:
    """Everything the loop needs; a stage's preset supplies defaults that the CLI may override."""

    steps: int = 1000
    batch_size: int = 32  # global batch per optimizer step, summed over processes and accumulation
    grad_accum: int = 1  # micro-batches per optimizer step on each process
    lr: float = 1e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # the cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.9999
    ema_power: float = 2.0 / 3.0  # EMA warm-up exponent (see ema.py); 0 uses ema_decay from the first step
    mixed_precision: str = "no"
    compile: bool = False
    channels_last: bool = False  # NHWC weights and images for convolutional networks (models/memory_format.py)
    seed: int = 0
    num_workers: int = 0  # data-loading processes per training process
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    sample_every: int = 0  # 0: sample grids only at the end (when the stage makes them)
    sample_count: int = 16
    # A wall-clock budget: the run stops after the first step that ends past it, with a final checkpoint, as
    # if ``steps`` had been reached (0: no budget). Pair it with lr_schedule="constant": a cosine would stop
    # part-way down its decay.
    max_minutes: float = 0.0
    # Fine-tuning: a model folder (``unclip export`` or a bundle's part, e.g. the bundled model's clip/) whose
    # weights start the run instead of a fresh initialisation. A resumed run ignores it: its checkpoint wins.
    init_from: str = ""

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]  # JSON gives a list
        positive = ("steps", "batch_size", "grad_accum", "keep_last", "log_every", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "num_workers", "sample_every", "sample_count"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"train.lr must be a finite number > 0, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(
                f"train.mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got {self.mixed_precision!r}"
            )
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"train.channels_last must be true or false, got {self.channels_last!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if not self.max_minutes >= 0:
            raise ValueError(f"train.max_minutes must be >= 0 (0: no budget), got {self.max_minutes!r}")
        if not isinstance(self.init_from, str):
            raise ValueError(f"train.init_from must be a model folder path or empty, got {self.init_from!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= 2**63 - 1:
            raise ValueError(f"train.seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}")
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip must be >= 0 (0 disables it), got {self.grad_clip!r}")

    def local_batch(self, world_size: int) -> int:
        """Samples per micro-batch on one process; the global batch must split evenly."""
        per_step = world_size * self.grad_accum
        if self.batch_size % per_step:
            raise ValueError(
                f"batch size {self.batch_size} does not split into {world_size} process(es) x "
                f"{self.grad_accum} accumulation step(s); use a multiple of {per_step}"
            )
        return self.batch_size // per_step


# Fields a resumed run may change without changing the trajectory of the weights.
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "checkpoint_every",
        "keep_last",
        "log_every",
        "sample_every",
        "sample_count",
        "num_workers",
        "max_minutes",
    }
)


@dataclass
class RunConfig:
    stage: str
    preset: str
    model: dict[str, Any]  # the stage's config dataclass, as a dict (the stage owns its type)
    train: TrainConfig
    data: str
    world_size: int = 1
    format_version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        d["train"] = from_dict(TrainConfig, d.get("train", {}), where="train")
        return from_dict(cls, d, where="run config")

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)


def _as_json(value: Any) -> Any:
    """The value as config.json stores it: tuples are lists there, so (1, 2) and [1, 2] are one setting."""
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value


def incompatibilities(saved: RunConfig, requested: RunConfig) -> list[str]:
    """Why a run folder made with ``saved`` cannot continue as ``requested`` (empty when it can).

    Anything that changes which samples, noise or updates a step sees is fixed for the life of a run; only
    the length and the bookkeeping cadence may change (``RESUMABLE_CHANGES``).
    """
    problems = []
    for name in ("stage", "preset", "data", "world_size", "format_version"):
        a, b = getattr(saved, name), getattr(requested, name)
        if a != b:
            problems.append(f"{name}: run folder has {a!r}, requested {b!r}")
    for key in sorted(set(saved.model) | set(requested.model)):
        a, b = saved.model.get(key, "<missing>"), requested.model.get(key, "<missing>")
        if _as_json(a) != _as_json(b):
            problems.append(f"model.{key}: run folder has {a!r}, requested {b!r}")
    for f in fields(TrainConfig):
        a, b = getattr(saved.train, f.name), getattr(requested.train, f.name)
        if f.name not in RESUMABLE_CHANGES and _as_json(a) != _as_json(b):
            problems.append(f"train.{f.name}: run folder has {a!r}, requested {b!r}")
    return problems


def from_dict(cls: type[T], d: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a JSON dict, refusing unknown keys (a typo must not be ignored)."""
    return config_from_dict(cls, d, where, error=ValueError)


def override(cfg: T, **changes: Any) -> T:
    """A copy of a dataclass with the non-``None`` changes applied (and re-validated by ``__post_init__``)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
