"""Signed distances of the eight shapes, in a unit frame ``[-1, 1]²`` with ``v`` pointing down.

Rendering and the judge's template fits share these functions, so a shape means the same thing to both. Every
shape is a union of pieces with exact signed distance (discs, boxes, convex polygons); pieces of one shape
overlap rather than share edges, so the minimum over pieces never leaves a seam inside the shape, and it is exact
outside, where anti-aliasing reads it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


def _regular(n: int, radius: float, start_deg: float) -> np.ndarray:
    a = np.deg2rad(start_deg + 360.0 * np.arange(n) / n)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star_kites(r_out: float = 1.0, r_in: float = 0.45, y_shift: float = 0.1) -> list[np.ndarray]:
    """Five convex kites (a point pushed past the centre, an inner vertex, a tip, the next inner vertex).

    Pushing each kite's root past the centre makes neighbouring kites overlap, so no seam is left. The star is
    shifted down by ``y_shift`` so its extent is centred in the frame.
    """
    kites = []
    for k in range(5):
        tip_a = math.radians(-90 + 72 * k)
        tip = (r_out * math.cos(tip_a), r_out * math.sin(tip_a) + y_shift)
        inner = [
            (r_in * math.cos(tip_a + s * math.radians(36)), r_in * math.sin(tip_a + s * math.radians(36)) + y_shift)
            for s in (-1, 1)
        ]
        root = (-0.2 * math.cos(tip_a), -0.2 * math.sin(tip_a) + y_shift)
        kites.append(np.array([root, inner[0], tip, inner[1]]))
    return kites


# Each shape: list of ("disc", (cx, cy, r)) | ("box", (cx, cy, hx, hy)) | ("poly", vertices counter-clockwise
# in screen terms — orientation is normalised below). Sizes are chosen so areas are comparable.
_HEART_SQ = np.array([(0.0, -0.62), (0.8, 0.18), (0.0, 0.98), (-0.8, 0.18)])
_PIECES: dict[str, list[tuple[str, object]]] = {
    "circle": [("disc", (0.0, 0.0, 0.95))],
    "square": [("box", (0.0, 0.0, 0.82, 0.82))],
    "triangle": [("poly", np.array([(0.0, -0.92), (1.0, 0.8), (-1.0, 0.8)]))],
    "star": [("poly", k) for k in _star_kites()],
    "heart": [
        ("poly", _HEART_SQ),
        ("disc", (0.4, -0.22, 0.566)),
        ("disc", (-0.4, -0.22, 0.566)),
    ],
    "cross": [("box", (0.0, 0.0, 0.92, 0.3)), ("box", (0.0, 0.0, 0.3, 0.92))],
    "diamond": [("poly", np.array([(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)]))],
    "hexagon": [("poly", _regular(6, 0.98, 0.0))],
}


class _EdgeSet(NamedTuple):
    """Edges of convex polygons, edge-major: each field is (E, P) for E edges of P polygons, float32, so that
    reductions over edges run over the leading axis (contiguous and fast)."""

    su: np.ndarray  # edge start points
    sv: np.ndarray
    vu: np.ndarray  # edge vectors
    vv: np.ndarray
    nu: np.ndarray  # outward unit normals
    nv: np.ndarray
    len2: np.ndarray  # squared edge lengths


def _edges(polys: list[np.ndarray]) -> _EdgeSet:
    """The edge set of convex polygons with equal vertex counts."""
    out = []
    for poly in polys:
        v = poly.astype(np.float64)
        # Orient consistently: positive signed area (shoelace) in (u, v) coordinates makes (e_v, -e_u) outward.
        area = 0.5 * np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
        if area < 0:
            v = v[::-1]
        e = np.roll(v, -1, axis=0) - v
        normal = np.stack([e[:, 1], -e[:, 0]], axis=1) / np.linalg.norm(e, axis=1, keepdims=True)
        out.append((v[:, 0], v[:, 1], e[:, 0], e[:, 1], normal[:, 0], normal[:, 1], np.sum(e * e, axis=1)))
    return _EdgeSet(*(np.stack([o[k] for o in out], axis=1).astype(np.float32) for k in range(7)))


def _compile(pieces: list[tuple[str, object]]) -> list[tuple[str, object]]:
    polys = [p for kind, p in pieces if kind == "poly"]
    rest = [(kind, tuple(np.float32(x) for x in p)) for kind, p in pieces if kind != "poly"]  # type: ignore[union-attr]
    if polys:
        assert len({len(p) for p in polys}) == 1, "batched polygons of one shape need equal vertex counts"
        rest.append(("poly", _edges(polys)))
    return rest


_COMPILED = {name: _compile(pieces) for name, pieces in _PIECES.items()}


_SHAPED: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}


def _shaped(es: _EdgeSet, point_dims: int) -> tuple[np.ndarray, ...]:
    """The edge arrays with ``point_dims`` trailing axes, made once per edge set (module constants) and layout."""
    key = (id(es), point_dims)
    if key not in _SHAPED:
        _SHAPED[key] = tuple(a.reshape(a.shape + (1,) * point_dims) for a in es)
    return _SHAPED[key]


def _sd_pieces(u: np.ndarray, v: np.ndarray, es: _EdgeSet, point_dims: int) -> np.ndarray:
    """Signed distance of each polygon of ``es``: (P, *points). The edge arrays get ``point_dims`` trailing axes
    and broadcast against ``u``, ``v``, so points may be (1, W) and (H, 1) (a pixel grid, never materialised
    until the first product) or (P, N) (one set of points per polygon).

    In-place arithmetic because on the small arrays here allocation and call overhead, not arithmetic, is the
    cost; the operations and their order are those of the plain formulas, so results are bit-identical.
    """
    su, sv, vu, vv, nu, nv, len2 = _shaped(es, point_dims)
    wu, wv = u - su, v - sv  # (E, P, *points)
    inside_d = np.maximum.reduce(wu * nu + wv * nv, axis=0)  # signed distance to the nearest edge line: exact inside
    t = wu * vu + wv * vv
    t /= len2
    np.maximum(t, 0.0, out=t)  # clip to [0, 1]: the nearest point of each edge segment, as a fraction along it
    np.minimum(t, 1.0, out=t)
    wu = wu - t * vu
    wv = wv - t * vv
    wu *= wu
    wv *= wv
    wu += wv
    outside_d = np.sqrt(np.minimum.reduce(wu, axis=0))  # exact outside: distance to the nearest edge segment
    return np.where(inside_d > 0, outside_d, inside_d)


def _sd_box(u: np.ndarray, v: np.ndarray, cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    qu = np.abs(u - cx) - hx
    qv = np.abs(v - cy) - hy
    outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
    return outside + np.minimum(np.maximum(qu, qv), 0.0)


def signed_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points ``(u, v)`` (unit frame) to ``shape``. ``u`` and ``v`` are
    1-D arrays of equal length, or broadcastable arrays such as (1, W) and (H, 1) for a grid."""
    d = None
    for kind, p in _COMPILED[shape]:
        if kind == "disc":
            cx, cy, r = p  # type: ignore[misc]
            di = np.hypot(u - cx, v - cy) - r
        elif kind == "box":
            di = _sd_box(u, v, *p)  # type: ignore[misc]
        else:
            di = _sd_pieces(u, v, p, np.ndim(u)).min(axis=0)  # type: ignore[arg-type]
        d = di if d is None else np.minimum(d, di)
    return d  # type: ignore[return-value]


def _batch_pieces() -> tuple[_EdgeSet, dict[str, np.ndarray]]:
    """Every piece of every shape in flat arrays, so the judge can evaluate all eight shapes in one vectorised pass.

    Polygons are padded to the largest vertex count by repeating their first edge: a repeated edge changes neither
    the maximum over edge lines (inside) nor the minimum over edge segments (outside), so distances stay exact.
    """
    polys, discs, boxes = [], [], []
    for s, name in enumerate(_PIECES):
        for kind, p in _COMPILED[name]:
            if kind == "disc":
                discs.append((s, *p))  # type: ignore[misc]
            elif kind == "box":
                boxes.append((s, *p))  # type: ignore[misc]
            else:
                polys.extend((s, [a[:, k] for a in p]) for k in range(p.su.shape[1]))  # type: ignore[union-attr]
    n_edges = max(len(fields[0]) for _, fields in polys)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.repeat(a[:1], n_edges - len(a))])

    edges = _EdgeSet(*(np.stack([pad(fields[k]) for _, fields in polys], axis=1) for k in range(7)))
    # Pieces are listed polygons first, then discs, then boxes; ``order`` regroups them shape by shape.
    owner = np.array([p[0] for p in polys] + [d[0] for d in discs] + [b[0] for b in boxes])
    order = np.argsort(owner, kind="stable")
    return edges, {
        "poly_shape": np.array([p[0] for p in polys]),
        "disc_shape": np.array([d[0] for d in discs]),
        "disc": np.array([d[1:] for d in discs], dtype=np.float32),
        "box_shape": np.array([b[0] for b in boxes]),
        "box": np.array([b[1:] for b in boxes], dtype=np.float32),
        "order": order,
        "group_starts": np.searchsorted(owner[order], np.arange(len(_PIECES))),
    }


_BATCH_EDGES, _BATCH = _batch_pieces()


def signed_distance_all(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distances of all eight shapes at once. ``u``, ``v`` have a leading axis of 8, row ``s`` in the frame
    of shape ``SHAPES[s]`` (the order of ``_PIECES``), and broadcastable trailing axes: (8, N) points, or (8, 1, W)
    and (8, H, 1) for a grid. Row ``s`` of the result equals :func:`signed_distance` for that shape."""
    b = _BATCH
    point_dims = np.ndim(u) - 1

    def col(a: np.ndarray, k: int) -> np.ndarray:  # one parameter of every disc or box, shaped to broadcast
        return a[:, k].reshape((-1,) + (1,) * point_dims)

    d_poly = _sd_pieces(u[b["poly_shape"]], v[b["poly_shape"]], _BATCH_EDGES, point_dims)
    disc, box = b["disc"], b["box"]
    d_disc = np.hypot(u[b["disc_shape"]] - col(disc, 0), v[b["disc_shape"]] - col(disc, 1)) - col(disc, 2)
    d_box = _sd_box(u[b["box_shape"]], v[b["box_shape"]], *(col(box, k) for k in range(4)))
    full = d_poly.shape[1:]  # every piece on the full grid, so the pieces stack
    d = np.concatenate([d_poly, np.broadcast_to(d_disc, d_disc.shape[:1] + full), d_box])[b["order"]]
    return np.minimum.reduceat(d, b["group_starts"], axis=0)


def _unit_moments(n: int = 400) -> dict[str, tuple[float, float, float]]:
    """Area and centroid of each shape in the unit frame, by dense point sampling (done once, at first use)."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    u, v = np.meshgrid(c, c)
    u, v = u.ravel(), v.ravel()
    out = {}
    for name in _PIECES:
        inside = signed_distance(name, u, v) < 0
        out[name] = (float(inside.mean() * 4.0), float(u[inside].mean()), float(v[inside].mean()))
    return out


_MOMENTS: dict[str, tuple[float, float, float]] | None = None


def unit_moments() -> dict[str, tuple[float, float, float]]:
    """``{shape: (area, centroid_u, centroid_v)}`` in the unit frame; computed lazily to keep imports pure."""
    global _MOMENTS
    if _MOMENTS is None:
        _MOMENTS = _unit_moments()
    return _MOMENTS
