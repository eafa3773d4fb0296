"""The training engine: one loop for every stage, on Hugging Face Accelerate (DESIGN.md §6).

A stage implements :class:`Stage` and registers a name with :func:`register_stage`; ``unclip train NAME`` then
trains it. Heavy optional part: ``import unclip`` does not import this package.
"""

from unclip.train.config import RunConfig, TrainConfig
from unclip.train.stage import Batch, Preset, Stage, StepOutput, get_stage, register_stage, stage_names

__all__ = [
    "Batch",
    "Preset",
    "RunConfig",
    "Stage",
    "StepOutput",
    "TrainConfig",
    "get_stage",
    "register_stage",
    "stage_names",
]
