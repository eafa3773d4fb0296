"""The text-to-image pipeline and the manipulations of §3 (DESIGN.md §2, layer 4)."""

from unclip.pipeline.manipulations import interpolate, invert, slerp, text_diff, variations
from unclip.pipeline.pipeline import PipelineOutput, UnCLIPPipeline, from_pil, to_pil
from unclip.pipeline.settings import SamplingSettings

__all__ = [
    "PipelineOutput",
    "SamplingSettings",
    "UnCLIPPipeline",
    "from_pil",
    "interpolate",
    "invert",
    "slerp",
    "text_diff",
    "to_pil",
    "variations",
]
