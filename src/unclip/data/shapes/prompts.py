"""The versioned GenEval-style prompt suite of the Shapes world: 120 prompts in each of six categories.

Built from a fixed seed by :func:`build_prompt_suite`; ``PROMPT_SUITE_VERSION`` names this exact list and a test
pins its hash, so a change to the list must come with a new version name. Prompts may mention sizes and
backgrounds for variety; the requirement (what the judge checks) is the scene-graph part that defines the
category, as in GenEval (Ghosh et al., 2023).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import permutations

import numpy as np

from .captions import COUNT_WORDS, SHAPE_WORDS, SIZE_WORDS
from .requirements import CATEGORIES, ObjectSpec, Requirement
from .scene import BACKGROUNDS, COLOURS, RELATIONS, SHAPES

PROMPT_SUITE_VERSION = "shapes-prompts-v1"
PER_CATEGORY = 120
_RELATION_TEXT = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


@dataclass(frozen=True)
class Prompt:
    key: str
    category: str
    text: str
    requirement: Requirement

    def to_json(self) -> dict:
        return {"key": self.key, "category": self.category, "prompt": self.text,
                "requirement": self.requirement.to_json(), "suite": PROMPT_SUITE_VERSION}  # fmt: skip


def _noun(shape: str, count: int = 1) -> str:
    singular, plural = SHAPE_WORDS[shape][0]
    return singular if count == 1 else plural


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _photo(core: str, bg: str | None) -> str:
    return f"a photo of {core}" + (f" on a {bg} background" if bg else "")


def _dress(core: str, rng: np.random.Generator) -> str:
    """Optional background, in the phrasing of GenEval's "a photo of …" prompts."""
    text = f"a photo of {core}"
    if rng.random() < 0.5:
        bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        text += f" on a {bg} background"
    return text


def _candidates(category: str, rng: np.random.Generator) -> list[tuple[str, Requirement]]:
    colours = list(COLOURS)
    out: list[tuple[str, Requirement]] = []
    if category == "single_object":
        for shape in SHAPES:
            for size in (None, *SIZE_WORDS):
                for bg in (None, *BACKGROUNDS):
                    noun = f"{SIZE_WORDS[size][0]} {_noun(shape)}" if size else _noun(shape)
                    out.append((_photo(_a(noun), bg), Requirement(category, (ObjectSpec(shape),))))
    elif category == "two_objects":
        for a, b in permutations(SHAPES, 2):
            for bg in (None, *BACKGROUNDS):
                text = _photo(f"{_a(_noun(a))} and {_a(_noun(b))}", bg)
                out.append((text, Requirement(category, (ObjectSpec(a), ObjectSpec(b)))))
    elif category == "counting":
        for shape in SHAPES:
            for n in (2, 3, 4):
                for bg in (None, *BACKGROUNDS):
                    text = _photo(f"{COUNT_WORDS[n][0]} {_noun(shape, n)}", bg)
                    out.append((text, Requirement(category, (ObjectSpec(shape, count=n),))))
    elif category == "colours":
        for shape in SHAPES:
            for colour in colours:
                for size in (None, *SIZE_WORDS):
                    noun = f"{colour} {_noun(shape)}"
                    text = _dress(_a(f"{SIZE_WORDS[size][0]} {noun}" if size else noun), rng)
                    out.append((text, Requirement(category, (ObjectSpec(shape, colour),))))
    elif category == "position":
        for a, b in permutations(SHAPES, 2):
            for rel in RELATIONS:
                text = _dress(f"{_a(_noun(a))} {_RELATION_TEXT[rel]} {_a(_noun(b))}", rng)
                out.append((text, Requirement(category, (ObjectSpec(a), ObjectSpec(b)), rel)))
            rel2 = RELATIONS[rng.integers(len(RELATIONS))]
            ca, cb = rng.choice(len(colours), size=2, replace=False)
            text = _dress(
                f"{_a(f'{colours[ca]} {_noun(a)}')} {_RELATION_TEXT[rel2]} {_a(f'{colours[cb]} {_noun(b)}')}", rng
            )
            req = Requirement(category, (ObjectSpec(a, colours[ca]), ObjectSpec(b, colours[cb])), rel2)
            out.append((text, req))
    elif category == "colour_attribution":
        for a, b in permutations(SHAPES, 2):
            for _ in range(3):
                ca, cb = rng.choice(len(colours), size=2, replace=False)
                text = _dress(f"{_a(f'{colours[ca]} {_noun(a)}')} and {_a(f'{colours[cb]} {_noun(b)}')}", rng)
                out.append((text, Requirement(category, (ObjectSpec(a, colours[ca]), ObjectSpec(b, colours[cb])))))
    return out


def build_prompt_suite(seed: int = 2204_06125) -> tuple[Prompt, ...]:
    """The suite: ``PER_CATEGORY`` distinct prompts per category, chosen at random from each category's pool."""
    prompts = []
    for cat in CATEGORIES:
        rng = np.random.default_rng([seed, CATEGORIES.index(cat)])
        pool = list(dict(_candidates(cat, rng)).items())  # de-duplicate prompt texts, keeping the first
        if len(pool) < PER_CATEGORY:
            raise RuntimeError(f"only {len(pool)} distinct {cat} prompts; need {PER_CATEGORY}")
        chosen = sorted(rng.choice(len(pool), size=PER_CATEGORY, replace=False))
        prompts += [Prompt(f"{cat}-{k:03d}", cat, *pool[i]) for k, i in enumerate(chosen)]
    return tuple(prompts)


def suite_hash(prompts: tuple[Prompt, ...]) -> str:
    """sha256 of the suite's canonical JSON: what a version name promises."""
    blob = json.dumps([p.to_json() for p in prompts], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


_SUITE: tuple[Prompt, ...] | None = None


def __getattr__(name: str) -> tuple[Prompt, ...]:
    # PROMPT_SUITE is built on first use (PEP 562), keeping ``import unclip.data.shapes`` cheap.
    global _SUITE
    if name == "PROMPT_SUITE":
        if _SUITE is None:
            _SUITE = build_prompt_suite()
        return _SUITE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
