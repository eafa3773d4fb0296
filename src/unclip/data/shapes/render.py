"""Anti-aliased rendering of scene graphs at any resolution from 32 to 1024 px.

Coverage of a pixel by a shape is read from the exact signed distance at the pixel centre,
``clip(0.5 - d / pixel, 0, 1)``: the area fraction of a straight edge crossing the pixel, which is what box
filtering the ideal image gives away from corners. Everything is computed from canvas fractions, so a scene
renders the same at every size (up to sampling), and objects are composited only over their own frame, which is
what makes the generator fast.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .geometry import signed_distance, signed_distance_all
from .scene import BACKGROUNDS, COLOURS, Background, SceneGraph, SceneObject

MIN_RESOLUTION = 32
MAX_RESOLUTION = 1024

_COLOUR_ARR = {k: np.array(v, dtype=np.float32) / 255.0 for k, v in COLOURS.items()}
_BG_ARR = {k: np.array(v, dtype=np.float32) / 255.0 for k, v in BACKGROUNDS.items()}


def check_resolution(resolution: object) -> int:
    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool):
        raise ValueError(f"resolution must be an integer number of pixels, got {resolution!r}")
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise ValueError(f"resolution {resolution} is out of range; expected {MIN_RESOLUTION} to {MAX_RESOLUTION} px")
    return int(resolution)


def _centres(n: int) -> np.ndarray:
    return ((np.arange(n, dtype=np.float32) + 0.5) / n).astype(np.float32)


def render_background(bg: Background, resolution: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]."""
    base = _BG_ARR[bg.colour]
    if bg.kind == "plain":
        canvas = np.empty((resolution, resolution, 3), dtype=np.float32)
        canvas[:] = base
        return canvas
    c = _centres(resolution)
    if bg.kind == "gradient":
        # Position along the gradient direction, rescaled so the canvas corners map to 0 and 1.
        du, dv = math.cos(bg.angle), math.sin(bg.angle)
        lo = min(0.0, du) + min(0.0, dv)
        hi = max(0.0, du) + max(0.0, dv)
        t = (c[None, :] * du + c[:, None] * dv - lo) / (hi - lo)
        return base + t[..., None] * (_BG_ARR[bg.colour2] - base)  # type: ignore[index]
    field = np.zeros((resolution, resolution), dtype=np.float32)
    for fx, fy, phase, amp in bg.waves:
        # Separable: cos(a + b) = cos a cos b − sin a sin b keeps the cost at two outer products per wave.
        ax = 2 * math.pi * fx * c
        ay = 2 * math.pi * fy * c + phase
        field += amp * (np.cos(ay)[:, None] * np.cos(ax)[None, :] - np.sin(ay)[:, None] * np.sin(ax)[None, :])
    canvas = base + field[..., None]
    np.maximum(canvas, 0.0, out=canvas)  # clip to [0, 1] in place (np.clip's dispatch costs more here)
    np.minimum(canvas, 1.0, out=canvas)
    return canvas


def coverage(shape: str, cx: float, cy: float, half: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (len(ys), len(xs)) of a shape whose frame is centred at ``(cx, cy)`` with half-side
    ``half``, sampled at pixel centres ``xs``, ``ys`` (canvas fractions) of a canvas of ``1 / pixel`` pixels."""
    pixel = float(xs[1] - xs[0]) if len(xs) > 1 else 1.0
    # A row and a column of unit-frame coordinates; the distance functions broadcast them to the (H, W) grid.
    u = ((xs - cx) / half)[None, :]
    v = ((ys - cy) / half)[:, None]
    d = signed_distance(shape, u, v) * (half / pixel)  # in pixels
    if d.shape != (len(ys), len(xs)):
        d = np.broadcast_to(d, (len(ys), len(xs)))
    a = 0.5 - d
    # clip(a, 0, 1) by two in-place ufuncs: the same values without np.clip's Python-level dispatch, which costs
    # more than the arithmetic on a patch this small.
    np.maximum(a, 0.0, out=a)
    np.minimum(a, 1.0, out=a)
    return a.astype(np.float32, copy=False)


def coverage_all(cx: np.ndarray, cy: np.ndarray, half: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """:func:`coverage` of all eight shapes in one pass, each with its own frame: ``cx``, ``cy``, ``half`` are
    (8,) in ``SHAPES`` order; returns (8, len(ys), len(xs)) float32."""
    pixel = float(xs[1] - xs[0]) if len(xs) > 1 else 1.0
    cx, cy, half = (np.asarray(a, dtype=np.float32)[:, None, None] for a in (cx, cy, half))
    # Flat (8, H·W) points: measured faster here than letting the distance computation broadcast a row and a column.
    shape = (len(cx), len(ys), len(xs))
    u = np.broadcast_to((xs[None, None, :] - cx) / half, shape).reshape(len(cx), -1)
    v = np.broadcast_to((ys[None, :, None] - cy) / half, shape).reshape(len(cx), -1)
    d = signed_distance_all(u, v).reshape(shape) * (half / pixel)  # in pixels
    return np.clip(0.5 - d, 0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _pixel_centres(n: int) -> np.ndarray:
    # Pixel centres in canvas fractions, computed once per resolution (read-only: callers take slices).
    c = (np.arange(n, dtype=np.float32) + 0.5) / n
    c.flags.writeable = False
    return c


def _frame_slice(centre: float, half: float, n: int) -> slice:
    # Pixels whose centres lie within the frame plus one pixel of anti-aliasing margin.
    lo = max(0, math.floor((centre - half) * n - 1))
    hi = min(n, math.ceil((centre + half) * n + 1))
    return slice(lo, hi)


def draw_object(canvas: np.ndarray, obj: SceneObject) -> None:
    """Composite ``obj`` onto a float canvas (H, W, 3) in place."""
    h, w = canvas.shape[:2]
    sy, sx = _frame_slice(obj.y, obj.half, h), _frame_slice(obj.x, obj.half, w)
    xs, ys = _pixel_centres(w)[sx], _pixel_centres(h)[sy]
    a = coverage(obj.shape, obj.x, obj.y, obj.half, xs, ys)[..., None]
    patch = canvas[sy, sx]
    patch += a * (_COLOUR_ARR[obj.colour] - patch)


def render(scene: SceneGraph, resolution: int = 64) -> np.ndarray:
    """Render ``scene`` as a uint8 RGB array of shape (resolution, resolution, 3)."""
    resolution = check_resolution(resolution)
    canvas = render_background(scene.background, resolution)
    for obj in scene.objects:
        draw_object(canvas, obj)
    canvas *= 255.0  # in place: the same arithmetic as (canvas * 255 + 0.5), one allocation fewer
    canvas += 0.5
    return canvas.astype(np.uint8)
