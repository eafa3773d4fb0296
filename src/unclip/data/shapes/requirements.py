"""Scene-graph requirements in the six GenEval categories, and how a set of objects satisfies one.

A requirement is checked against *objects* — anything with ``shape``, ``colour``, ``x`` and ``y`` — so the same
function judges a ground-truth scene graph and the objects the judge detects in an image. Semantics follow
GenEval (Ghosh et al., 2023): each listed object must be present at least ``count`` times, except in
``counting``, where the count must be exact; ``position`` needs some matching pair in the stated relation
(by at least ``JUDGE_MARGIN``); ``colour_attribution`` needs each colour on its own shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .scene import COLOURS, RELATIONS, SHAPES, SceneGraph, relation_holds

CATEGORIES = ("single_object", "two_objects", "counting", "colours", "position", "colour_attribution")


class HasPlacement(Protocol):
    shape: str
    colour: str
    x: float
    y: float


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.colour is not None and self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {tuple(COLOURS)}")
        if not 1 <= self.count <= 4:
            raise ValueError(f"object count {self.count} is out of range 1-4")

    def matches(self, obj: HasPlacement) -> bool:
        return obj.shape == self.shape and (self.colour is None or obj.colour == self.colour)

    def to_json(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "count": self.count}


@dataclass(frozen=True)
class Requirement:
    """``objects`` must appear; with ``relation``, ``objects[0]`` must be ``relation`` ``objects[1]``."""

    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; expected one of {CATEGORIES}")
        if not self.objects:
            raise ValueError("a requirement needs at least one object")
        if self.relation is not None and (self.relation not in RELATIONS or len(self.objects) != 2):
            raise ValueError(f"relation {self.relation!r} needs one of {RELATIONS} and exactly two objects")

    def satisfied_by(self, objects: Sequence[HasPlacement]) -> bool:
        for spec in self.objects:
            n = sum(spec.matches(o) for o in objects)
            if n < spec.count or (self.category == "counting" and n != spec.count):
                return False
        if self.relation is not None:
            a, b = self.objects
            return any(
                oa is not ob and a.matches(oa) and b.matches(ob) and relation_holds(oa, ob, self.relation)  # type: ignore[arg-type]
                for oa in objects
                for ob in objects
            )
        return True

    def to_json(self) -> dict:
        return {"category": self.category, "objects": [o.to_json() for o in self.objects], "relation": self.relation}

    @classmethod
    def from_json(cls, d: dict) -> Requirement:
        try:
            objs = tuple(ObjectSpec(o["shape"], o.get("colour"), int(o.get("count", 1))) for o in d["objects"])
            return cls(d["category"], objs, d.get("relation"))
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"malformed requirement: missing or wrong field {err}") from err

    def to_geneval(self) -> dict:
        """GenEval's metadata for this requirement (``tag``, ``include``, and ``exclude`` for counting), as in its
        ``evaluation_metadata.jsonl``. GenEval writes a relation on the second object, pointing at the first:
        "A right of B" is ``include: [B, A + position ["right of", 0]]``."""
        items = [{"class": o.shape, "count": o.count} | ({"color": o.colour} if o.colour else {}) for o in self.objects]
        if self.relation is not None:
            a, b = items
            items = [b, {**a, "position": [self.relation, 0]}]
        out: dict = {"tag": _GENEVAL_TAGS[self.category], "include": items}
        if self.category == "counting":  # GenEval's exact count: at least n (include) and fewer than n + 1 (exclude)
            out["exclude"] = [{"class": o.shape, "count": o.count + 1} for o in self.objects]
        return out

    @classmethod
    def from_geneval(cls, d: dict) -> Requirement:
        """The requirement a GenEval metadata row states (the inverse of :meth:`to_geneval`), for rows whose classes
        and colours are Shapes-world ones."""
        try:
            tags = {v: k for k, v in _GENEVAL_TAGS.items()}
            if d["tag"] not in tags:
                raise ValueError(f"unknown GenEval tag {d['tag']!r}; expected one of {tuple(tags)}")
            category = tags[d["tag"]]
            items = list(d["include"])
            specs = [ObjectSpec(i["class"], i.get("color"), int(i.get("count", 1))) for i in items]
            placed = [k for k, i in enumerate(items) if i.get("position")]
            for e in d.get("exclude", []):
                fits = [s for s in specs if s.shape == e["class"] and e.get("color") == s.colour]
                if category != "counting" or not fits or int(e["count"]) != fits[0].count + 1:
                    raise ValueError(f"exclude {e} is not an exact count of an included object")
            if not placed:
                return cls(category, tuple(specs))
            relation, anchor = items[placed[0]]["position"]
            if len(items) != 2 or int(anchor) != 1 - placed[0]:
                raise ValueError("a position needs two objects, the second placed relative to the first")
            return cls(category, (specs[placed[0]], specs[int(anchor)]), relation)
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"malformed GenEval metadata: missing or wrong field {err}") from err


# Our category names and GenEval's tags for the same six categories.
_GENEVAL_TAGS = {"single_object": "single_object", "two_objects": "two_object", "counting": "counting",
                 "colours": "colors", "position": "position", "colour_attribution": "color_attr"}  # fmt: skip


def requirements_for_scene(scene: SceneGraph) -> dict[str, Requirement]:
    """One requirement per category that ``scene`` can illustrate, each true of the scene by construction.

    Categories a scene cannot show (two objects need two shapes; position needs a relation clear by
    ``CLEAR_MARGIN``; colour attribution needs two shapes in two colours) are left out.
    """
    objs = scene.objects
    first = objs[0]
    out = {
        "single_object": Requirement("single_object", (ObjectSpec(first.shape),)),
        "colours": Requirement("colours", (ObjectSpec(first.shape, first.colour),)),
    }
    counts: dict[str, int] = {}
    for o in objs:
        counts[o.shape] = counts.get(o.shape, 0) + 1
    top = max(counts, key=lambda s: counts[s])  # first shape with the largest count
    out["counting"] = Requirement("counting", (ObjectSpec(top, count=counts[top]),))
    shapes = list(counts)
    if len(shapes) >= 2:
        out["two_objects"] = Requirement("two_objects", (ObjectSpec(shapes[0]), ObjectSpec(shapes[1])))
    pairs = [(a, b) for i, a in enumerate(objs) for b in objs[i + 1 :]]
    for a, b in pairs:
        if a.shape != b.shape and a.colour != b.colour:
            specs = (ObjectSpec(a.shape, a.colour), ObjectSpec(b.shape, b.colour))
            out["colour_attribution"] = Requirement("colour_attribution", specs)
            break
    for i, j, rel in ((i, j, r) for i, j, r in _clear_relations(scene)):
        a, b = objs[i], objs[j]
        out["position"] = Requirement("position", (ObjectSpec(a.shape, a.colour), ObjectSpec(b.shape, b.colour)), rel)
        break
    return out


def _clear_relations(scene: SceneGraph) -> list[tuple[int, int, str]]:
    # Prefer the axis with the larger separation, as a person describing the scene would.
    out = []
    for i, rel, j in scene.relations():
        a, b = scene.objects[i], scene.objects[j]
        horizontal = rel in ("left of", "right of")
        if (abs(a.x - b.x) >= abs(a.y - b.y)) == horizontal:
            out.append((i, j, rel))
    return out
