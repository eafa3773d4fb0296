"""Counterfactual scenes: the smallest edit of a scene graph that makes a hard-negative caption true.

A hard negative caption ("a blue circle and a red square" for an image of a red circle and a blue square) is, for
a contrastive loss, only half of a binding example: it tells the image which caption *not* to prefer, but no
image ever stands for the negative, so the text tower is never shown *where* the negative's embedding should go.
The probe of docs/clip.md ("Binding") measured the result: after NegCLIP training the two captions' text
embeddings drift apart in a direction unrelated to the images' difference (alignment 0.08). Shapes world can
draw the missing half: the scene with the two colours exchanged, or the two objects' places exchanged. As an
extra (image, caption) pair of the batch it is the hard negative of its source in *both* directions of the loss,
and the text gradient then points along z_i(A) − z_i(B), the difference the image tower already encodes (cf.
TripletCLIP, Patel et al. 2024, which synthesizes such image negatives with a text-to-image model).

:func:`counterfactual_scene` reads both captions back (``parse_caption``), edits only the objects that the
changed phrase names, and checks the result: the negative must hold of it and the original caption must not.
Edits it makes:

- a phrase's colour or shape changed (one phrase: ``colour``, ``shape``; two phrases: ``swap``): the objects that
  phrase counted get the new colour or shape, positions and sizes unchanged;
- a relation replaced by its opposite (``relation``): the two related objects exchange places when both still fit
  the canvas and keep clear of the others, else the whole scene is mirrored along the relation's axis.

A count change would need objects placed or removed; it returns None, as does anything else it cannot edit.
"""

from __future__ import annotations

from dataclasses import replace

from .captions import CaptionClaims, Phrase, claims_hold, parse_caption
from .scene import CLEAR_MARGIN, SceneGraph, SceneObject, frames_clear, relation_holds

# The hard-negative kinds of unclip.data.negatives that this module can draw.
KINDS = ("swap", "colour", "shape", "relation")
_AXIS = {"left of": "x", "right of": "x", "above": "y", "below": "y"}


def counterfactual_scene(scene: SceneGraph, caption: str, negative: str) -> SceneGraph | None:
    """A minimal edit of ``scene`` of which ``negative`` is true and ``caption`` false, or None if there is none
    this module can make (captions it cannot parse, a count change, a result that fails the check)."""
    try:
        true, false = parse_caption(caption), parse_caption(negative)
    except ValueError:
        return None
    if len(true.phrases) != len(false.phrases) or true.background != false.background:
        return None
    if true.relation != false.relation:
        edited = _relation_edit(scene, true) if true.phrases == false.phrases else None
    else:
        edited = _phrase_edit(scene, true, false)
    if edited is None or not claims_hold(false, edited) or claims_hold(true, edited):
        return None
    return edited


def _members(scene: SceneGraph, claims: CaptionClaims) -> list[list[int]] | None:
    """For each phrase, the indices of the objects it speaks of (None if the caption is not true of the scene)."""
    objs = scene.objects
    if claims.relation is None:
        # An exhaustive list: each object matches exactly one phrase (claims_hold's semantics).
        members: list[list[int]] = [[] for _ in claims.phrases]
        for i, o in enumerate(objs):
            hits = [k for k, p in enumerate(claims.phrases) if p.matches(o)]
            if len(hits) != 1:
                return None
            members[hits[0]].append(i)
        return members
    pair = _related_pair(scene, claims)
    return None if pair is None else [[pair[0]], [pair[1]]]


def _related_pair(scene: SceneGraph, claims: CaptionClaims) -> tuple[int, int] | None:
    a, b = claims.phrases
    for i, oa in enumerate(scene.objects):
        for j, ob in enumerate(scene.objects):
            if i != j and a.matches(oa) and b.matches(ob) and relation_holds(oa, ob, claims.relation, CLEAR_MARGIN):
                return i, j
    return None


def _phrase_edit(scene: SceneGraph, true: CaptionClaims, false: CaptionClaims) -> SceneGraph | None:
    members = _members(scene, true)
    if members is None:
        return None
    objects = list(scene.objects)
    for old, new, idx in zip(true.phrases, false.phrases, members, strict=True):
        if old == new:
            continue
        if old.count != new.count or old.size != new.size:
            return None  # a count or size edit would move or add objects
        objects = [_restyled(o, new) if k in idx else o for k, o in enumerate(objects)]
    return replace(scene, objects=tuple(objects))


def _restyled(obj: SceneObject, phrase: Phrase) -> SceneObject:
    return replace(obj, shape=phrase.shape, colour=phrase.colour if phrase.colour is not None else obj.colour)


def _relation_edit(scene: SceneGraph, true: CaptionClaims) -> SceneGraph | None:
    pair = _related_pair(scene, true)
    if pair is None:
        return None
    i, j = pair
    objects = list(scene.objects)
    try:  # exchange the two objects' places (a frame may not fit the other's place: SceneObject checks)
        objects[i] = replace(scene.objects[i], x=scene.objects[j].x, y=scene.objects[j].y)
        objects[j] = replace(scene.objects[j], x=scene.objects[i].x, y=scene.objects[i].y)
        if frames_clear(objects):
            return replace(scene, objects=tuple(objects))
    except ValueError:
        pass
    axis = _AXIS[true.relation]  # type: ignore[index]
    mirrored = tuple(replace(o, **{axis: round(1.0 - getattr(o, axis), 6)}) for o in scene.objects)
    return replace(scene, objects=mirrored)
