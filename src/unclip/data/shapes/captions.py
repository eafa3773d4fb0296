"""Captions drawn from scene graphs, and a parser that reads them back.

A caption is built in two steps. :func:`describe` picks what to say — the *claims*: either an exhaustive list of
noun phrases (every object is counted in exactly one phrase) or one spatial relation between two objects, plus
optionally the background. :func:`caption_text` then words the claims with varied templates, synonyms, orders,
counts ("two", "a pair of", "3") and optional details. :func:`parse_caption` inverts the wording exactly, and
:func:`claims_hold` checks claims against a scene graph — together they prove every caption true of its image.

Semantics: a list caption is exhaustive ("two yellow squares and a red circle" means exactly those three objects,
with sizes or colours left out when not mentioned); a relation caption is existential ("a small star to the left
of a blue heart": some small star lies left of some blue heart by at least ``CLEAR_MARGIN``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .scene import CLEAR_MARGIN, SceneGraph, SceneObject, relation_holds

SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium-sized", "medium", "mid-sized"),
    "large": ("big", "large"),
}
COLOUR_WORDS = {
    "red": ("red",),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
}
# (singular, plural) nouns per shape.
SHAPE_WORDS = {
    "circle": (("circle", "circles"), ("disc", "discs")),
    "square": (("square", "squares"),),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
    "heart": (("heart", "hearts"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "hexagon": (("hexagon", "hexagons"),),
}
COUNT_WORDS = {1: ("a", "a", "a", "one"), 2: ("two", "a pair of", "2"), 3: ("three", "3"), 4: ("four", "4")}
RELATION_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_LIST_FRAMES = ("{}", "{}", "a picture of {}", "an image of {}", "a drawing of {}", "a photo of {}",
                "a simple illustration of {}", "there {be} {}")  # fmt: skip
_REL_FRAMES = ("{a} {r} {b}", "{a} is {r} {b}", "a picture of {a} {r} {b}", "there is {a} {r} {b}",
               "a photo of {a} {r} {b}")  # fmt: skip
_PREFIXES = ("a picture of ", "an image of ", "a drawing of ", "a photo of ", "a simple illustration of ",
             "there is ", "there are ")  # fmt: skip


@dataclass(frozen=True)
class Phrase:
    """``count`` objects of ``shape``, and of ``colour`` / ``size`` when these are not None."""

    count: int
    shape: str
    colour: str | None = None
    size: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (
            obj.shape == self.shape
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
        )


@dataclass(frozen=True)
class CaptionClaims:
    """What a caption asserts. ``relation`` set: ``phrases[0] relation phrases[1]``; else the list is exhaustive.
    ``background``: ``("plain", name)``, ``("texture", name)``, ``("gradient", name_a, name_b)`` (sorted) or None."""

    phrases: tuple[Phrase, ...]
    relation: str | None = None
    background: tuple[str, ...] | None = None


def _background_claim(scene: SceneGraph) -> tuple[str, ...]:
    bg = scene.background
    if bg.kind == "gradient":
        return ("gradient", *sorted((bg.colour, bg.colour2)))  # type: ignore[type-var]
    return (bg.kind, bg.colour)


RELATION_RATE = 0.35  # how often a caption states one of its scene's clear relations, where it has one


def describe(scene: SceneGraph, rng: np.random.Generator, relation_rate: float = RELATION_RATE) -> CaptionClaims:
    """Choose the claims of one caption of ``scene``: with probability ``relation_rate`` one of its clear relations,
    if it has any (one draw of ``rng`` either way, so the rate changes no other choice)."""
    background = _background_claim(scene) if rng.random() < 0.4 else None
    clear = scene.relations(CLEAR_MARGIN)
    if clear and rng.random() < relation_rate:
        i, rel, j = clear[rng.integers(len(clear))]
        phrases = tuple(
            Phrase(1, o.shape, o.colour if rng.random() < 0.8 else None, o.size if rng.random() < 0.35 else None)
            for o in (scene.objects[i], scene.objects[j])
        )
        return CaptionClaims(phrases, rel, background)
    with_colour, with_size = rng.random() < 0.85, rng.random() < 0.3
    groups: dict[tuple, int] = {}
    for o in scene.objects:  # insertion order keeps first mentions first; shuffled below
        key = (o.shape, o.colour if with_colour else None, o.size if with_size else None)
        groups[key] = groups.get(key, 0) + 1
    phrases = [Phrase(n, *key) for key, n in groups.items()]
    order = rng.permutation(len(phrases))
    return CaptionClaims(tuple(phrases[k] for k in order), None, background)


def _pick(rng: np.random.Generator, options: Sequence) -> Any:
    return options[rng.integers(len(options))]


class _Lexicon:
    """Synonyms chosen once per caption: one caption never calls the same colour both "cyan" and "turquoise"."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.chosen = rng, {}

    def __call__(self, table: dict, key: str) -> Any:
        if (id(table), key) not in self.chosen:
            self.chosen[id(table), key] = _pick(self.rng, table[key])
        return self.chosen[id(table), key]


def _phrase_text(p: Phrase, rng: np.random.Generator, lex: _Lexicon) -> str:
    nouns = lex(SHAPE_WORDS, p.shape)
    noun = nouns[0] if p.count == 1 else nouns[1]
    words = [_pick(rng, SIZE_WORDS[p.size])] if p.size else []
    colour = lex(COLOUR_WORDS, p.colour) if p.colour else None
    postfix = colour is not None and rng.random() < 0.15  # "two squares in yellow"
    if colour and not postfix:
        words.append(colour)
    words.append(noun)
    count = _pick(rng, COUNT_WORDS[p.count])
    if count == "a" and words[0][0] in "aeiou":
        count = "an"
    return " ".join([count, *words]) + (f" in {colour}" if postfix else "")


def _background_text(claim: tuple[str, ...]) -> str:
    if claim[0] == "gradient":
        return f"{claim[1]} and {claim[2]} gradient"
    return claim[1] if claim[0] == "plain" else f"textured {claim[1]}"


def caption_text(claims: CaptionClaims, rng: np.random.Generator) -> str:
    """Word ``claims`` as one English caption."""
    lex = _Lexicon(rng)
    parts = [_phrase_text(p, rng, lex) for p in claims.phrases]
    bg_prefix = False
    if claims.relation is not None:
        frame = _pick(rng, _REL_FRAMES)
        text = frame.format(a=parts[0], r=_pick(rng, RELATION_WORDS[claims.relation]), b=parts[1])
    else:
        if len(parts) == 1:
            listed = parts[0]
        else:
            joiner = _pick(rng, (" and ", ", and ")) if len(parts) > 2 else " and "
            listed = ", ".join(parts[:-1]) + joiner + parts[-1]
        frame = _pick(rng, _LIST_FRAMES)
        text = frame.format(listed, be="is" if claims.phrases[0].count == 1 else "are")
        bg_prefix = frame == "{}" and claims.background is not None and rng.random() < 0.4
    if claims.background is not None:
        bg = _background_text(claims.background)
        if bg_prefix:
            text = f"a {bg} background with {text}"
        elif rng.random() < 0.75:
            text = f"{text} on a {bg} background"
        else:
            text = f"{text} against a {bg} backdrop"
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    return text + ("." if rng.random() < 0.3 else "")


CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def converse_caption(text: str, rng: np.random.Generator) -> str | None:
    """The same relation said from the other object ("a star left of a square" → "a square to the right of a
    star"), freshly worded, or None if ``text`` states no relation or is not a caption :func:`parse_caption`
    reads. True of exactly the scenes ``text`` is true of: relation_holds(a, b, r) is relation_holds(b, a,
    CONVERSE[r])."""
    try:
        claims = parse_caption(text)
    except ValueError:
        return None
    if claims.relation is None:
        return None
    a, b = claims.phrases
    return caption_text(CaptionClaims((b, a), CONVERSE[claims.relation], claims.background), rng)


def caption(scene: SceneGraph, rng: np.random.Generator | int = 0, relation_rate: float = RELATION_RATE) -> str:
    """One random caption of ``scene``; ``rng`` is a generator or an integer seed."""
    rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    return caption_text(describe(scene, rng, relation_rate), rng)


# ---------------------------------------------------------------- parsing


def _alternation(words: dict[str, tuple[str, ...]]) -> str:
    flat = sorted({w for ws in words.values() for w in ws}, key=len, reverse=True)
    return "|".join(re.escape(w) for w in flat)


def _inverse(words: dict) -> dict[str, str]:
    return {w: k for k, ws in words.items() for w in ws}


_SIZE_OF, _COLOUR_OF, _REL_OF = _inverse(SIZE_WORDS), _inverse(COLOUR_WORDS), _inverse(RELATION_WORDS)
_NOUN_OF = {
    w: (shape, n)
    for shape, pairs in SHAPE_WORDS.items()
    for pair in pairs
    for w, n in zip(pair, ("one", "many"), strict=True)
}
_COUNT_OF = {w: n for n, ws in COUNT_WORDS.items() for w in ws} | {"an": 1}
_NOUNS = "|".join(re.escape(w) for w in sorted(_NOUN_OF, key=len, reverse=True))
_PHRASE_RE = re.compile(
    rf"^(?P<count>{'|'.join(re.escape(w) for w in sorted(_COUNT_OF, key=len, reverse=True))}) "
    rf"(?:(?P<size>{_alternation(SIZE_WORDS)}) )?(?:(?P<colour>{_alternation(COLOUR_WORDS)}) )?"
    rf"(?P<noun>{_NOUNS})(?: in (?P<post>{_alternation(COLOUR_WORDS)}))?$"
)
_REL_RE = re.compile(rf"^(?P<a>.+?) (?:is )?(?P<rel>{_alternation(RELATION_WORDS)}) (?P<b>.+)$")
_BG_NAMES = "white|light grey|grey|dark grey|black|cream|slate"
_BG_RE = re.compile(rf"^(?:(?P<tex>textured) )?(?P<a>{_BG_NAMES})(?: and (?P<b>{_BG_NAMES}) gradient)?$")


def _parse_phrase(text: str) -> Phrase:
    m = _PHRASE_RE.match(text)
    if m is None:
        raise ValueError(f"cannot parse noun phrase {text!r}")
    count = _COUNT_OF[m["count"]]
    shape, number = _NOUN_OF[m["noun"]]
    if (number == "one") != (count == 1):
        raise ValueError(f"count and noun disagree in {text!r}")
    if m["colour"] and m["post"]:
        raise ValueError(f"two colours in {text!r}")
    colour = m["colour"] or m["post"]
    return Phrase(count, shape, _COLOUR_OF[colour] if colour else None, _SIZE_OF[m["size"]] if m["size"] else None)


def _parse_background(text: str) -> tuple[str, ...]:
    m = _BG_RE.match(text)
    if m is None or (m["tex"] and m["b"]):
        raise ValueError(f"cannot parse background {text!r}")
    if m["b"]:
        return ("gradient", *sorted((m["a"], m["b"])))
    return ("texture" if m["tex"] else "plain", m["a"])


def parse_caption(text: str) -> CaptionClaims:
    """Read the claims back from a caption written by :func:`caption_text`; ValueError if it is not one."""
    t = text.strip().lower()
    t = t[:-1] if t.endswith(".") else t
    background = None
    m = re.match(r"^a (.+?) background with (.+)$", t)
    if m:
        background, t = _parse_background(m[1]), m[2]
    else:
        m = re.match(r"^(.+) (?:on a (.+) background|against a (.+) backdrop)$", t)
        if m:
            background, t = _parse_background(m[2] or m[3]), m[1]
    for prefix in _PREFIXES:
        if t.startswith(prefix):
            t = t[len(prefix) :]
            break
    m = _REL_RE.match(t)
    if m:
        return CaptionClaims((_parse_phrase(m["a"]), _parse_phrase(m["b"])), _REL_OF[m["rel"]], background)
    parts = re.split(r",? and |, ", t)
    return CaptionClaims(tuple(_parse_phrase(p) for p in parts), None, background)


def claims_hold(claims: CaptionClaims, scene: SceneGraph) -> bool:
    """Whether every claim is true of ``scene`` (exhaustive counts for lists, existence for relations)."""
    if claims.background is not None and claims.background != _background_claim(scene):
        return False
    objs = scene.objects
    if claims.relation is not None:
        a, b = claims.phrases
        return any(
            i != j and a.matches(oa) and b.matches(ob) and relation_holds(oa, ob, claims.relation, CLEAR_MARGIN)
            for i, oa in enumerate(objs)
            for j, ob in enumerate(objs)
        )
    if sum(p.count for p in claims.phrases) != len(objs):
        return False
    # Exhaustive: each object matches exactly one phrase, and each phrase matches exactly its count.
    if any(sum(p.matches(o) for p in claims.phrases) != 1 for o in objs):
        return False
    return all(sum(p.matches(o) for o in objs) == p.count for p in claims.phrases)
