"""What a trainable stage is, and the registry ``unclip train STAGE`` resolves names from.

A stage (CLIP, a prior, the decoder, an upsampler) is a small class: it names its config dataclass and its
presets, builds its network from a config, turns a batch into a loss and, when it is generative, draws a
sample grid for the log. The engine (``unclip.train.engine``) does everything else: processes, precision,
accumulation, clipping, the optimizer, EMA, checkpoints, data and logging. A stage never sees any of it.

Registering a stage::

    register_stage("decoder", lambda: DecoderStage())

The registry maps a name to a zero-argument factory so that the heavy module defining a stage is imported
only when that stage is trained (``unclip --help`` stays fast) while go-to-definition still works.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor, nn

from unclip.train.config import TrainConfig, from_dict
from unclip.transfers import to_device

C = TypeVar("C")


@dataclass
class Preset(Generic[C]):
    """A named, typed starting point: the stage's model config and the loop's defaults."""

    model: C
    train: TrainConfig
    description: str = ""


@dataclass
class Batch:
    """A micro-batch on one process, as the data pipeline delivers it.

    ``image`` is float32 ``(B, 3, H, W)`` in [-1, 1] at the stage's resolution; ``caption`` and ``scene``
    (the Shapes-world scene graph or a ``KEY.json`` side file, ``None`` when absent) are per sample;
    ``index`` holds each sample's position in the global data stream and ``seed`` a per-sample seed derived
    from (run seed, position). Drawing a sample's noise from its own seed makes a step's result independent of
    how the global batch is split over processes, which is what lets one process reproduce a multi-process run.
    ``extra`` holds what the stage's :meth:`Stage.batch_extras` prepared in the data loader (empty without it).
    """

    image: Tensor
    caption: list[str]
    scene: list[dict[str, Any] | None]
    index: Tensor
    seed: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(to_device(self.image, device), self.caption, self.scene, self.index, self.seed, self.extra)

    def generators(self, salt: int = 0) -> list[torch.Generator]:
        """One CPU generator per sample, seeded from its seed (and ``salt`` for independent draws)."""
        return sample_generators(self.seed, salt)


def sample_generators(seeds: Tensor, salt: int = 0) -> list[torch.Generator]:
    """One CPU generator per per-sample seed (the same in a step and in a loader worker's batch_extras)."""
    return [torch.Generator().manual_seed((int(s) * 1_000_003 + salt) % 2**63) for s in seeds]


@dataclass
class StepOutput:
    """A stage's loss for one micro-batch: the scalar to back-propagate and metrics to log.

    A metric is a Python float or a 0-d tensor on the batch's device, left there (detached): turning it into a
    float would wait for the accelerator in the middle of the step, before the backward pass is even queued. The
    engine sums metrics on the device and reads them only on logging steps (one transfer for all of them).
    """

    loss: Tensor
    metrics: dict[str, float | Tensor]

    def scalars(self) -> dict[str, float]:
        """The metrics as Python floats (waits for the device: for tests and tools, not inside a step)."""
        return as_floats(self.metrics)


def as_floats(metrics: dict[str, float | Tensor]) -> dict[str, float]:
    """Metrics as Python floats, the device's read in one transfer (a logging step's only wait for them)."""
    on_device = [k for k, v in metrics.items() if isinstance(v, Tensor)]
    if on_device:
        first = metrics[on_device[0]].device
        values = torch.stack([metrics[k].detach().float().reshape(()).to(first) for k in on_device]).tolist()
        metrics = {**metrics, **dict(zip(on_device, values, strict=True))}
    return {k: float(v) for k, v in metrics.items()}


class Stage(ABC, Generic[C]):
    """The contract every trainable stage implements. ``C`` is the stage's config dataclass."""

    name: ClassVar[str]
    config_type: ClassVar[type]

    @abstractmethod
    def presets(self) -> dict[str, Preset[C]]:
        """Named presets; the first is the default. Every one must build (tests check this)."""

    def prepare(self, config: C) -> None:
        """Load and check what the stage needs from outside the run (a frozen CLIP, an embedding folder).

        The engine calls it once before any other work, so a missing or mismatched resource fails at once
        with a clear message. ``build`` stays a pure function of the config.
        """

    @abstractmethod
    def build(self, config: C) -> nn.Module:
        """A freshly initialised network for ``config``, on the CPU in float32; the engine seeds torch first.

        Pure: no files are read here (that is ``prepare``'s job), so every preset can be built anywhere."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch, config: C) -> StepOutput:
        """The training loss of ``model`` (possibly wrapped for DDP/autocast; call it, don't inspect it)."""

    def batch_extras(self, config: C) -> Callable[[Any], dict[str, Any]] | None:
        """A function of a loader micro-batch (captions, scenes, seeds, images on the CPU) whose result reaches ``loss``
        as ``batch.extra``, or None. An ``"image"`` entry replaces the batch's images (the step then copies only what
        it uses to the device, e.g. an upsampler's crops). It runs in the data-loading workers
        (``train.num_workers``), beside image decoding, so CPU work that needs no network (text edits, rendered
        scenes) overlaps the accelerator's step instead of stalling it. It must be picklable and deterministic in the
        micro-batch."""
        return None

    def export(self, model: nn.Module, config: C, folder: str | Path) -> Path:
        """Write a trained network as a self-describing model folder (``unclip export``)."""
        raise ValueError(f"stage {self.name!r} has no model-folder format to export to")

    def check_init_from(self, config: C, folder: Path) -> None:
        """Refuse a ``train.init_from`` model folder whose weights would load but mean something else (a CLIP
        whose tokenizer numbers the tokens differently); shapes and names are checked by the engine."""

    def init_state(self, config: C, model: nn.Module, loaded: dict[str, Tensor]) -> dict[str, Tensor]:
        """The tensors ``model`` loads from a ``train.init_from`` folder whose tensors are ``loaded``: the folder's
        own by default; a stage whose network is part of another kind of folder picks its part (the noised CLIP
        starts from a CLIP folder's image tower)."""
        return loaded

    def after_init_from(self, config: C, model: nn.Module, loaded: dict[str, Tensor]) -> None:
        """Adapt ``model`` after ``train.init_from`` loaded its parameters from a folder whose tensors are
        ``loaded`` (its buffers were kept as ``build`` fitted them): e.g. rewrite layers so the model computes
        what the folder's did under the new data statistics. Nothing by default."""

    def resolution(self, config: C) -> int:
        """Side of the square images the data pipeline must deliver for this config."""
        return int(config.resolution)  # type: ignore[attr-defined]

    def sample(self, model: nn.Module, config: C, n: int, generator: torch.Generator) -> Tensor | None:
        """``n`` generated images ``(n, 3, H, W)`` in [-1, 1] for the log's sample grid, or ``None``."""
        return None

    # Serialization helpers: a stage's config round-trips through JSON for the run folder.
    def config_to_dict(self, config: C) -> dict[str, Any]:
        return asdict(config)  # type: ignore[call-overload]

    def config_from_dict(self, d: dict[str, Any]) -> C:
        return from_dict(self.config_type, d, where=f"{self.name} config")

    def preset(self, name: str | None) -> tuple[str, Preset[C]]:
        presets = self.presets()
        if not presets:
            raise ValueError(f"stage {self.name!r} defines no presets")
        if name is None:
            name = next(iter(presets))
        if name not in presets:
            raise ValueError(f"unknown preset {name!r} for stage {self.name!r}; expected one of {', '.join(presets)}")
        return name, presets[name]


_REGISTRY: dict[str, Callable[[], Stage[Any]]] = {}


def register_stage(name: str, factory: Callable[[], Stage[Any]], *, replace: bool = False) -> None:
    if name in _REGISTRY and not replace:
        raise ValueError(f"a stage named {name!r} is already registered")
    _REGISTRY[name] = factory


def _builtin_toy() -> Stage[Any]:
    from unclip.train.toy import ToyDenoiserStage

    return ToyDenoiserStage()


register_stage("toy", _builtin_toy)


def _prior_stage(name: str) -> Stage[Any]:
    from unclip.train.prior_stage import PRIOR_STAGES  # lazy: the prior networks load only when a prior trains

    return PRIOR_STAGES[name]()


register_stage("diffusion_prior", lambda: _prior_stage("diffusion_prior"))
register_stage("ar_prior", lambda: _prior_stage("ar_prior"))
register_stage("clip", lambda: __import__("unclip.train.clip_stage", fromlist=["ClipStage"]).ClipStage())
register_stage("lit", lambda: __import__("unclip.train.lit_stage", fromlist=["LiTStage"]).LiTStage())
register_stage("decoder", lambda: __import__("unclip.train.decoder_stage", fromlist=["DecoderStage"]).DecoderStage())
register_stage(
    "noised_clip",
    lambda: __import__("unclip.train.noised_clip_stage", fromlist=["NoisedClipStage"]).NoisedClipStage(),
)
register_stage(
    "upsampler", lambda: __import__("unclip.train.upsampler_stage", fromlist=["UpsamplerStage"]).UpsamplerStage()
)


def stage_names() -> list[str]:
    return sorted(_REGISTRY)


def get_stage(name: str) -> Stage[Any]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(stage_names())}")
    stage = _REGISTRY[name]()
    if not isinstance(stage, Stage):
        raise TypeError(f"the factory registered for {name!r} returned {type(stage).__name__}, not a Stage")
    return stage
