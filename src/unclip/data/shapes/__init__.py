"""Shapes world: procedural captioned images with exact scene graphs, and a judge of compositional faithfulness.

The project's embedded default dataset (DESIGN.md §4). Public API::

    from unclip.data.shapes import ShapesWorld, SceneGraph, render, caption, PROMPT_SUITE, judge

    world = ShapesWorld(split="train", seed=0, resolution=64)   # splits: train, val, test, heldout
    sample = world[i]        # deterministic per (seed, split, i)
    sample.image             # np.ndarray uint8 (H, W, 3)
    sample.caption           # str, true of the image
    sample.scene             # SceneGraph; .to_json() / SceneGraph.from_json(d)
    render(scene, 256)       # the same scene at any resolution from 32 to 1024
    caption(scene, rng)      # one more random caption of a scene
    judge(image, requirement)  # JudgeResult: truthy when the image satisfies the requirement

Also exported: ``SceneObject``, ``Background``, ``sample_scene``; ``parse_caption``, ``claims_hold`` (read a
caption back and check it against a scene); ``Requirement``, ``ObjectSpec``, ``CATEGORIES``,
``requirements_for_scene``; ``Prompt``, ``PROMPT_SUITE_VERSION``; ``detect`` (the objects the judge sees);
``HELDOUT_PAIRS``, ``HELDOUT_TRIPLES``, ``SPLITS``; the vocabulary ``SHAPES``, ``COLOURS``, ``SIZES``,
``BACKGROUNDS``, ``RELATIONS``. See docs/shapes_world.md.
"""

from __future__ import annotations

from .captions import CaptionClaims, Phrase, caption, claims_hold, converse_caption, parse_caption
from .judging import Detection, JudgeResult, detect, judge
from .prompts import PROMPT_SUITE_VERSION, Prompt, build_prompt_suite
from .render import MAX_RESOLUTION, MIN_RESOLUTION, render
from .requirements import CATEGORIES, ObjectSpec, Requirement, requirements_for_scene
from .scene import (
    BACKGROUNDS,
    COLOURS,
    RELATIONS,
    SHAPES,
    SIZES,
    Background,
    SceneGraph,
    SceneObject,
    sample_scene,
)
from .splits import HELDOUT_PAIRS, HELDOUT_TRIPLES, SPLITS, heldout_compositions
from .world import Sample, ShapesWorld


def __getattr__(name: str) -> object:
    if name == "PROMPT_SUITE":  # built lazily by the prompts module
        from . import prompts

        return prompts.PROMPT_SUITE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLOURS",
    "HELDOUT_PAIRS",
    "HELDOUT_TRIPLES",
    "MAX_RESOLUTION",
    "MIN_RESOLUTION",
    "PROMPT_SUITE",
    "PROMPT_SUITE_VERSION",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Background",
    "CaptionClaims",
    "Detection",
    "JudgeResult",
    "ObjectSpec",
    "Phrase",
    "Prompt",
    "Requirement",
    "Sample",
    "SceneGraph",
    "SceneObject",
    "ShapesWorld",
    "build_prompt_suite",
    "caption",
    "claims_hold",
    "converse_caption",
    "detect",
    "heldout_compositions",
    "judge",
    "parse_caption",
    "render",
    "requirements_for_scene",
    "sample_scene",
]
