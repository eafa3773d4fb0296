"""The text-to-image pipeline, the manipulations of §3 and the probing of §4 (DESIGN.md §2, layer 4)."""

from unclip.pipeline.manipulations import interpolate, invert, slerp, text_diff, variations
from unclip.pipeline.pipeline import PipelineOutput, UnCLIPPipeline, from_pil, to_pil
from unclip.pipeline.probing import embedding_pca, fit_embedding_pca, probe
from unclip.pipeline.settings import SamplingSettings

__all__ = [
    "PipelineOutput",
    "SamplingSettings",
    "UnCLIPPipeline",
    "embedding_pca",
    "fit_embedding_pca",
    "from_pil",
    "interpolate",
    "invert",
    "probe",
    "slerp",
    "text_diff",
    "to_pil",
    "variations",
]
