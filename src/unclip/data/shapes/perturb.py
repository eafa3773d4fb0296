"""Degradations that stand in for the imperfections of generated images, used to test the judge's robustness."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian pixel noise of standard deviation ``sigma`` on the [0, 1] scale, rounded back to uint8."""
    x = image.astype(np.float32) / 255.0 + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels in each spatial direction (channels kept apart)."""
    x = ndimage.gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0), mode="nearest")
    return (np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round trip through JPEG at ``quality`` (Pillow's default 4:2:0 chroma subsampling)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))
