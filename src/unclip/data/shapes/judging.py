"""The judge: find the objects in an image and decide whether they satisfy a requirement.

A classical pipeline, no learned weights:

1. **Segment by chroma.** Backgrounds are achromatic and object colours saturated (``scene.py``), so pixels with
   chroma (max − min channel) above ``FG_CHROMA`` are object pixels; connected components are objects (the
   generator keeps a gap between objects so each is one component). Tiny components are noise and dropped.
2. **Colour** = the palette colour nearest in hue to the component's most saturated pixels. Mixing a colour with
   grey keeps its hue, so anti-aliasing and blur do not move it; noise and JPEG move it far less than the ~30°
   between palette hues.
3. **Coverage.** Each pixel is modelled as ``p = α c + (1 − α) b`` with ``c`` the object's colour and ``b`` the
   local background, and ``α`` is read off by projection onto ``c − b``. Using all three channels keeps the
   full-resolution luminance, which JPEG preserves better than chroma.
4. **Shape by analysis-by-synthesis.** For each of the eight shapes, a template of the area and centroid the
   coverage map implies is rendered with the generator's own signed distances (``geometry.py``), blurred a
   little like the observation, and the shape whose template fits best (least squares) wins. The fit also
   gives the object's frame centre, from which relations are read.

Images larger than ``WORK_RESOLUTION`` are box-downsampled first: speed does not grow with resolution, and the
shapes stay resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from .geometry import unit_moments
from .render import coverage
from .requirements import Requirement
from .scene import COLOURS, SHAPES, SIZES

FG_CHROMA = 0.3
SOFT_PASSES = 2  # the common blur of the soft comparison: σ = 1 px
CLEAN_RESIDUAL = 0.006  # mean squared coverage error below which an object counts as cleanly rendered
WORK_RESOLUTION = 128
MIN_AREA = 0.003  # fraction of the canvas; the smallest object covers about 0.013
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32) / 255.0


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue angle in radians of (..., 3) colours, from the opponent-colour plane (cheaper than HSV, same order)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)


_PALETTE_HUE = _hue(_PALETTE)
_COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True)
class Detection:
    shape: str
    colour: str
    x: float  # frame centre, canvas fractions
    y: float
    half: float  # half the frame side
    fit: float  # mean squared coverage error of the best template (lower is better)

    @property
    def size(self) -> str:
        return min(SIZES, key=lambda s: abs(SIZES[s] - 2 * self.half))


@dataclass(frozen=True)
class JudgeResult:
    satisfied: bool
    detections: tuple[Detection, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.satisfied


def as_float_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB image (uint8, or float in [0, 1]) and return it as float32 in [0, 1]."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 8:
        raise ValueError(f"expected an RGB image of shape (H, W, 3) with H, W >= 8, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"expected uint8 or float pixels, got dtype {arr.dtype}")


def _downsample(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= WORK_RESOLUTION:
        return img
    scale = WORK_RESOLUTION / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    chans = [np.asarray(Image.fromarray(img[..., c], mode="F").resize(size, Image.Resampling.BOX)) for c in range(3)]
    return np.stack(chans, axis=-1)


def _soften(a: np.ndarray, passes: int) -> np.ndarray:
    """Separable binomial [1, 2, 1] / 4 blur with zero padding; each pass adds variance 1/2 px²."""
    for _ in range(passes):
        p = np.pad(a, 1)
        a = 0.25 * (p[1:-1, :-2] + p[1:-1, 2:]) + 0.5 * p[1:-1, 1:-1]
        p = np.pad(a, 1)
        a = 0.25 * (p[:-2, 1:-1] + p[2:, 1:-1]) + 0.5 * p[1:-1, 1:-1]
    return a


def _fit_shape(
    alpha: np.ndarray, xs: np.ndarray, ys: np.ndarray, area: float
) -> tuple[str, float, float, float, float]:
    """Best-fitting shape for a coverage patch: (shape, frame centre x, y, half side, mean squared error)."""
    total = alpha.sum()
    mx = float((alpha.sum(axis=0) * xs).sum() / total)
    my = float((alpha.sum(axis=1) * ys).sum() / total)
    # Clean renders match their true template almost exactly, so a sharp comparison separates even small circles
    # from hexagons. Degradations (blur, JPEG, noise) leave a residual for every template; then observation and
    # templates are compared after a common blur, which tolerates rounded corners and averages noise.
    fits = []
    for shape, (unit_area, cu, cv) in unit_moments().items():
        half = float(np.sqrt(area / unit_area))
        cx, cy = mx - cu * half, my - cv * half
        t = coverage(shape, cx, cy, half, xs, ys)
        fits.append((float(np.mean((alpha - t) ** 2)), shape, cx, cy, half, t))
    sharp = min(fits, key=lambda f: f[0])
    if sharp[0] <= CLEAN_RESIDUAL:
        return sharp[1], sharp[2], sharp[3], sharp[4], sharp[0]
    obs = _soften(alpha, SOFT_PASSES)
    soft = min(((float(np.mean((obs - _soften(f[5], SOFT_PASSES)) ** 2)), *f[1:5]) for f in fits), key=lambda f: f[0])
    return soft[1], soft[2], soft[3], soft[4], soft[0]


def detect(image: np.ndarray) -> list[Detection]:
    """The objects in ``image`` (uint8 or float RGB), left to right."""
    img = _downsample(as_float_image(image))
    h, w = img.shape[:2]
    chroma = img.max(axis=2) - img.min(axis=2)
    labels, n = ndimage.label(chroma > FG_CHROMA)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    found = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or sizes[k] < max(3.0, MIN_AREA * h * w):
            continue
        m = 3  # margin in pixels: room for anti-aliased and blurred edges
        y0, y1 = max(0, sl[0].start - m), min(h, sl[0].stop + m)
        x0, x1 = max(0, sl[1].start - m), min(w, sl[1].stop + m)
        patch, lab, chr_ = img[y0:y1, x0:x1], labels[y0:y1, x0:x1], chroma[y0:y1, x0:x1]
        own = lab == k
        near = ndimage.binary_dilation(own, iterations=2)
        bg_mask = (lab == 0) & ~near
        if bg_mask.sum() >= 4:
            b = np.median(patch[bg_mask], axis=0)
        else:  # object fills its patch: fall back to the least saturated pixels
            b = np.median(patch[chr_ <= np.quantile(chr_, 0.1)], axis=0)
        own_chroma = chr_[own]
        # The object's colour from its fully covered pixels: the most saturated ones (a robust maximum).
        core = patch[own][own_chroma >= 0.9 * np.quantile(own_chroma, 0.9)]
        c = np.median(core, axis=0)
        # Project onto c − b with the grey axis removed: backgrounds vary (gradients, texture) only along grey,
        # so that variation must not read as coverage.
        diff = c - b
        diff = diff - diff.mean()
        alpha = np.clip(((patch - b) @ diff) / max(float(diff @ diff), 1e-6), 0.0, 1.0)
        alpha[(lab != 0) & ~own] = 0.0  # another object's pixels are not ours
        hue = _hue(c)
        dist = np.abs(np.angle(np.exp(1j * (_PALETTE_HUE - hue))))
        colour = _COLOUR_NAMES[int(np.argmin(dist))]
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) / w
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) / h
        area = float(alpha.sum()) / (h * w)
        if area <= 0:
            continue
        shape, cx, cy, half, err = _fit_shape(alpha, xs, ys, area)
        found.append(Detection(shape, colour, cx, cy, half, err))
    return sorted(found, key=lambda d: d.x)


def judge(image: np.ndarray, requirement: Requirement) -> JudgeResult:
    """Whether ``image`` satisfies ``requirement``; the result is truthy when it does and carries the detections."""
    detections = tuple(detect(image))
    return JudgeResult(requirement.satisfied_by(detections), detections)


__all__ = ["SHAPES", "Detection", "JudgeResult", "as_float_image", "detect", "judge"]
