"""Scene graphs of the Shapes world: the vocabulary, the JSON form, the relations, and random sampling.

Coordinates are fractions of the canvas, ``x`` to the right and ``y`` downwards (image convention), so the same
scene renders identically at every resolution. An object's ``(x, y)`` is the centre of its frame: the square of
side ``SIZES[size]`` that the shape is drawn in.

Ground truth stays exact because the sampler keeps a gap between the frames of any two objects (no overlap, no
touching) and keeps every frame inside the canvas: each object is a whole, separate blob in every render.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

SCENE_FORMAT = "shapes-scene-v1"

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon")

# Saturated colours about 30° or more apart in hue, with chroma (max − min channel) of at least 0.6: blur, noise
# and JPEG move a pixel's hue far less than that, and mixing with an achromatic background keeps hue exactly.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 40),
    "orange": (250, 120, 10),
    "yellow": (240, 225, 20),
    "green": (30, 180, 55),
    "cyan": (20, 195, 215),
    "blue": (35, 80, 230),
    "purple": (145, 45, 215),
    "pink": (240, 70, 175),
}

# Backgrounds are (nearly) achromatic, so no object colour name ever applies to a background and the judge can
# tell objects from background by chroma alone. Chroma stays ≤ 0.08 even for the tinted ones.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 238),
    "light grey": (200, 200, 200),
    "grey": (128, 128, 128),
    "dark grey": (70, 70, 72),
    "black": (22, 22, 22),
    "cream": (236, 230, 216),
    "slate": (106, 114, 126),
}

BACKGROUND_KINDS = ("plain", "gradient", "texture")

# Frame side as a fraction of the canvas. Even "small" spans 6 px at 32 px, enough for the judge to tell shapes.
SIZES: dict[str, float] = {"small": 0.24, "medium": 0.3, "large": 0.36}

RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# Minimum gap between object frames (fraction of the canvas): 2 px at 32 px, 4 px at 64 px, so a blur of σ = 1 px
# does not merge neighbours into one blob.
GAP = 0.06
# A relation is stated in a caption only when the centres differ by at least this much along its axis.
CLEAR_MARGIN = 0.15
# The judge (and the ground-truth check beside it) accepts a relation at this smaller margin, as GenEval does.
JUDGE_MARGIN = 0.05


def relation_holds(a: SceneObject, b: SceneObject, relation: str, margin: float = JUDGE_MARGIN) -> bool:
    """Whether ``a`` is ``relation`` ``b`` ("left of", "right of", "above", "below") by at least ``margin``."""
    if relation == "left of":
        return b.x - a.x >= margin
    if relation == "right of":
        return a.x - b.x >= margin
    if relation == "above":
        return b.y - a.y >= margin
    if relation == "below":
        return a.y - b.y >= margin
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def _check_choice(what: str, value: object, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {allowed}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    x: float
    y: float

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("colour", self.colour, COLOURS)
        _check_choice("size", self.size, SIZES)
        half = SIZES[self.size] / 2
        for name, v in (("x", self.x), ("y", self.y)):
            if not (isinstance(v, (int, float)) and half - 1e-9 <= v <= 1 - half + 1e-9):
                raise ValueError(f"object {name}={v!r} puts a {self.size} frame outside the canvas")

    @property
    def half(self) -> float:
        """Half the frame side (canvas fraction)."""
        return SIZES[self.size] / 2

    def to_json(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "x": self.x, "y": self.y}


@dataclass(frozen=True)
class Background:
    """``plain`` uses ``colour``; ``gradient`` runs from ``colour`` to ``colour2`` along ``angle`` (radians);
    ``texture`` adds ``waves`` — (fx, fy, phase, amplitude) cosines in cycles per canvas — to ``colour``."""

    kind: str
    colour: str
    colour2: str | None = None
    angle: float = 0.0
    waves: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        _check_choice("background kind", self.kind, BACKGROUND_KINDS)
        _check_choice("background colour", self.colour, BACKGROUNDS)
        if self.kind == "gradient":
            _check_choice("background colour2", self.colour2, BACKGROUNDS)
        if self.kind == "texture" and not self.waves:
            raise ValueError("a texture background needs at least one wave")

    def to_json(self) -> dict:
        d: dict = {"kind": self.kind, "colour": self.colour}
        if self.kind == "gradient":
            d.update(colour2=self.colour2, angle=self.angle)
        if self.kind == "texture":
            d["waves"] = [list(w) for w in self.waves]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Background:
        waves = tuple(tuple(float(v) for v in w) for w in d.get("waves", ()))
        if any(len(w) != 4 for w in waves):
            raise ValueError(f"background waves must be [fx, fy, phase, amplitude] lists, got {d.get('waves')!r}")
        return cls(d["kind"], d["colour"], d.get("colour2"), float(d.get("angle", 0.0)), waves)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SceneGraph:
    objects: tuple[SceneObject, ...]
    background: Background = field(default_factory=lambda: Background("plain", "grey"))

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= 4:
            raise ValueError(f"a scene holds 1 to 4 objects, got {len(self.objects)}")

    def relations(self, margin: float = CLEAR_MARGIN) -> list[tuple[int, str, int]]:
        """Every ordered pair's relations that hold by at least ``margin``, as ``(i, relation, j)``."""
        out = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if i != j:
                    out.extend((i, r, j) for r in RELATIONS if relation_holds(a, b, r, margin))
        return out

    def to_json(self) -> dict:
        return {
            "format": SCENE_FORMAT,
            "objects": [o.to_json() for o in self.objects],
            "background": self.background.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict) -> SceneGraph:
        """Strict inverse of :meth:`to_json`: a wrong format tag, missing key or unknown value raises ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"a scene graph is a JSON object, got {type(d).__name__}")
        if d.get("format") != SCENE_FORMAT:
            raise ValueError(f"scene graph format {d.get('format')!r} is not {SCENE_FORMAT!r}")
        try:
            objects = tuple(
                SceneObject(o["shape"], o["colour"], o["size"], float(o["x"]), float(o["y"])) for o in d["objects"]
            )
            background = Background.from_json(d["background"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed scene graph: missing or wrong field {err}") from err
        return cls(objects, background)


def frames_clear(objects: Sequence[SceneObject], gap: float = GAP) -> bool:
    """True when every two frames are at least ``gap`` apart along x or along y (so they cannot touch)."""
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            reach = a.half + b.half + gap
            if abs(a.x - b.x) < reach and abs(a.y - b.y) < reach:
                return False
    return True


def _cdf(p: Sequence[float]) -> np.ndarray:
    cdf = np.cumsum(np.asarray(p, dtype=np.float64))
    cdf /= cdf[-1]
    return cdf


def _weighted_choice(rng: np.random.Generator, cdf: np.ndarray) -> int:
    """``rng.choice(len(cdf), p=p)`` with ``cdf`` precomputed by ``_cdf(p)``: the same single uniform draw and the
    same search, so the same result and stream, at a tenth of the cost (choice re-validates ``p`` every call).
    A test checks the equivalence against ``rng.choice``."""
    return int(cdf.searchsorted(rng.random(), side="right"))


_COUNT_CDF = _cdf([0.22, 0.3, 0.26, 0.22])  # 1, 2, 3 or 4 objects
_KIND_CDF = _cdf([0.45, 0.3, 0.25])  # plain, gradient, texture


def _sample_background(rng: np.random.Generator) -> Background:
    names = list(BACKGROUNDS)
    kind = BACKGROUND_KINDS[_weighted_choice(rng, _KIND_CDF)]
    colour = names[rng.integers(len(names))]
    if kind == "plain":
        return Background("plain", colour)
    if kind == "gradient":
        other = [n for n in names if n != colour]
        return Background("gradient", colour, other[rng.integers(len(other))], float(rng.uniform(0, 2 * math.pi)))
    n_waves = int(rng.integers(2, 4))
    waves = tuple(
        (
            float(rng.integers(-6, 7)),
            float(rng.integers(1, 7)),
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(0.015, 0.04)),  # light: a few percent of full scale per wave
        )
        for _ in range(n_waves)
    )
    return Background("texture", colour, waves=waves)


def _first_clear_position(
    rng: np.random.Generator, half: float, boxes: list[tuple[float, float, float]], tries: int
) -> tuple[float, float] | None:
    """The first of up to ``tries`` uniform positions ``rng.uniform(half, 1 - half, size=2)`` (rounded to 4
    decimals) whose frame keeps GAP from every placed ``(x, y, half)`` box, or None.

    Same draws, same answer and the same generator state afterwards as calling ``rng.uniform`` once per try:
    ``uniform`` fills an array element by element from the stream, so one call of size 2n gives the values of n
    calls of size 2. Most candidates are rejected, and one call per try was the sampler's largest cost, so all
    tries are drawn at once and the generator is then rewound to just after the accepted one.
    """
    if not boxes:  # nothing placed yet: the first try is accepted
        x, y = rng.uniform(half, 1 - half, size=2).tolist()
        return round(x, 4), round(y, 4)
    state = rng.bit_generator.state
    draws = rng.uniform(half, 1 - half, size=2 * tries).tolist()
    for k in range(tries):
        x, y = round(draws[2 * k], 4), round(draws[2 * k + 1], 4)
        # ``frames_clear`` against the placed objects only (they are clear of each other), on plain floats.
        if all(abs(x - bx) >= half + bh + GAP or abs(y - by) >= half + bh + GAP for bx, by, bh in boxes):
            rng.bit_generator.state = state
            rng.uniform(half, 1 - half, size=2 * (k + 1))  # consume exactly the tries up to the accepted one
            return x, y
    return None  # every try was used, as the one-call-per-try loop would have done


def _place(
    rng: np.random.Generator, specs: Sequence[tuple[str, str, str]], tries: int = 60
) -> list[SceneObject] | None:
    """Drop objects one by one at uniform positions, retrying any that would come within GAP of a placed one."""
    placed: list[SceneObject] = []
    boxes: list[tuple[float, float, float]] = []  # (x, y, half) of the placed objects
    for shape, colour, size in specs:
        half = SIZES[size] / 2
        position = _first_clear_position(rng, half, boxes, tries)
        if position is None:
            return None
        placed.append(SceneObject(shape, colour, size, *position))
        boxes.append((*position, half))
    return placed


def sample_scene(rng: np.random.Generator, max_tries: int = 100) -> SceneGraph:
    """A random scene: 1–4 objects, and often repeated shapes or colours so counting and binding get practice."""
    sizes = list(SIZES)
    for _ in range(max_tries):
        n = _weighted_choice(rng, _COUNT_CDF) + 1
        mode = rng.random()
        shape0 = SHAPES[rng.integers(len(SHAPES))]
        colour0 = list(COLOURS)[rng.integers(len(COLOURS))]
        specs = []
        for _k in range(n):
            if n > 1 and mode < 0.3:  # a counting scene: n copies of one coloured shape
                shape, colour = shape0, colour0
            elif n > 1 and mode < 0.45:  # one shape in several colours
                shape, colour = shape0, list(COLOURS)[rng.integers(len(COLOURS))]
            else:
                shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]
            specs.append((shape, colour, sizes[rng.integers(len(sizes))]))
        placed = _place(rng, specs)
        if placed is not None:
            return SceneGraph(tuple(placed), _sample_background(rng))
    raise RuntimeError("could not place the objects of a scene; this should not happen with 1-4 objects")
