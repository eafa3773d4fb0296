"""Hard negative captions for attribute binding (NegCLIP, Yuksekgonul et al. 2023, §4).

CLIP trained on (image, caption) pairs alone behaves much like a bag of words: "a red circle and a blue square"
and "a blue circle and a red square" get nearly the same embedding, because a random batch almost never holds
both. unCLIP inherits this (Ramesh et al. 2022, §7 names attribute binding as its weakness). NegCLIP's remedy is
to add, for each caption, minimal edits that make it false, as extra negatives in the contrastive loss.

Edits are word-level, keep the rest of the caption (including its case) and keep it grammatical:

- ``swap``: exchange the colours of two objects ("a red circle left of a blue square" → "a blue circle left of
  a red square");
- ``colour``: change one colour; ``shape``: change one shape noun (singular stays singular);
- ``count``: change a number word among 2, 3 and 4 (plural nouns stay plural);
- ``relation``: replace a spatial relation by its opposite (left ↔ right, above ↔ below).

The vocabulary is the Shapes world's (with its synonyms) and plain English, so this also works on other captions;
a caption without a slot for a kind gets ``None`` for it. Whether an edit is really false needs the image: the
training stage checks edits against the scene graph when there is one (``unclip.train.clip_stage``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unclip.data.shapes.captions import COLOUR_WORDS, SHAPE_WORDS

KINDS = ("swap", "colour", "shape", "count", "relation")

# The Shapes world's words and synonyms for colours and shapes (one source: its caption grammar).
COLOURS = COLOUR_WORDS
SHAPES = SHAPE_WORDS
COUNTS = {2: ("two", "2"), 3: ("three", "3"), 4: ("four", "4")}
# relation word -> its opposite, word for word
RELATIONS = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "on the left of": "on the right of",
    "on the right of": "on the left of",
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
    "over": "under",
    "under": "over",
    "beneath": "above",
}


@dataclass(frozen=True)
class _Slot:
    start: int
    end: int
    kind: str  # colour, shape, count, relation
    value: str  # canonical colour/shape, count as str, or the relation words
    plural: bool = False


def _alternation(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_COLOUR_OF = {w: c for c, ws in COLOURS.items() for w in ws}
_SHAPE_OF = {w: (s, i == 1) for s, pairs in SHAPES.items() for pair in pairs for i, w in enumerate(pair)}
_COUNT_OF = {w: n for n, ws in COUNTS.items() for w in ws}
_GROUPS = {
    "relation": _alternation(list(RELATIONS)),
    "shape": _alternation(list(_SHAPE_OF)),
    "colour": _alternation(list(_COLOUR_OF)),
    "count": _alternation(list(_COUNT_OF)),
}
_SLOT_RE = re.compile(r"\b(?:" + "|".join(f"(?P<{k}>{v})" for k, v in _GROUPS.items()) + r")\b", flags=re.IGNORECASE)


def slots(caption: str) -> list[_Slot]:
    """The editable words of ``caption``, left to right."""
    out = []
    for m in _SLOT_RE.finditer(caption):
        kind = m.lastgroup
        word = m.group().lower()
        if kind == "colour":
            out.append(_Slot(m.start(), m.end(), kind, _COLOUR_OF[word]))
        elif kind == "shape":
            shape, plural = _SHAPE_OF[word]
            out.append(_Slot(m.start(), m.end(), kind, shape, plural))
        elif kind == "count":
            out.append(_Slot(m.start(), m.end(), kind, str(_COUNT_OF[word])))
        else:
            out.append(_Slot(m.start(), m.end(), "relation", word))
    return out


def _cased(new: str, old: str) -> str:
    return new[0].upper() + new[1:] if old[:1].isupper() else new


def _splice(caption: str, edits: list[tuple[_Slot, str]]) -> str:
    for slot, word in sorted(edits, key=lambda e: -e[0].start):  # right to left keeps offsets valid
        head = caption[: slot.start]
        # Keep the article right: "an orange circle" -> "a red circle", "a red star" -> "an orange star".
        m = re.search(r"\b(an?)(\s+)$", head, flags=re.IGNORECASE)
        if m:
            article = "an" if word[0].lower() in "aeiou" else "a"
            head = head[: m.start()] + _cased(article, m.group(1)) + m.group(2)
        caption = head + _cased(word, caption[slot.start : slot.end]) + caption[slot.end :]
    return caption


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def make_negative(caption: str, kind: str, rng: np.random.Generator) -> str | None:
    """One hard negative of ``kind`` for ``caption``, or ``None`` when the caption has nothing to edit for it."""
    if kind not in KINDS:
        raise ValueError(f"unknown hard-negative kind {kind!r}; expected one of {', '.join(KINDS)}")
    found = slots(caption)
    if kind == "swap":
        # A colour binds to the next shape noun; swapping the colours of two objects of the same shape ("a blue
        # star and a yellow star") changes nothing, so such pairs are skipped.
        noun = {id(s): next((t.value for t in found[k + 1 :] if t.kind == "shape"), None) for k, s in enumerate(found)}
        colours = [s for s in found if s.kind == "colour"]
        pairs = [
            (a, b)
            for i, a in enumerate(colours)
            for b in colours[i + 1 :]
            if a.value != b.value and (noun[id(a)] is None or noun[id(a)] != noun[id(b)])
        ]
        if not pairs:
            return None
        a, b = _pick(rng, pairs)
        return _splice(caption, [(a, caption[b.start : b.end].lower()), (b, caption[a.start : a.end].lower())])
    candidates = [s for s in found if s.kind == kind]
    if not candidates:
        return None
    slot = _pick(rng, candidates)
    if kind == "colour":
        return _splice(caption, [(slot, COLOURS[_pick(rng, [c for c in COLOURS if c != slot.value])][0])])
    if kind == "shape":
        new = _pick(rng, [s for s in SHAPES if s != slot.value])
        return _splice(caption, [(slot, SHAPES[new][0][1 if slot.plural else 0])])
    if kind == "count":
        n = _pick(rng, [n for n in COUNTS if str(n) != slot.value])
        return _splice(caption, [(slot, COUNTS[n][0])])
    return _splice(caption, [(slot, RELATIONS[slot.value])])


def hard_negatives(caption: str, rng: np.random.Generator, kinds: Sequence[str] = KINDS) -> dict[str, str]:
    """Every kind of hard negative ``caption`` allows, as ``{kind: negative caption}``."""
    out = {}
    for kind in kinds:
        neg = make_negative(caption, kind, rng)
        if neg is not None and neg.lower() != caption.lower():
            out[kind] = neg
    return out
