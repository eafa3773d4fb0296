"""Any PIL image as 8-bit RGB, whatever its mode (RGBA, L, P, CMYK, 1, and 16-bit grayscale).

PIL's own ``convert("RGB")`` clips 16-bit grayscale (modes ``I;16*`` and ``I``, as 16-bit PNG and TIFF files open)
to 255 instead of scaling it, so a 16-bit photograph comes out white; such images are scaled to 8 bits first.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB image; 16-bit grayscale is scaled by 255 / 65535, not clipped."""
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im).astype(np.float64)
        # Mode I also holds 8-bit values (a converted L image); only values beyond 255 say the range is 16-bit.
        if im.mode != "I" or arr.max(initial=0) > 255:
            arr = arr * (255.0 / 65535.0)
        im = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")
    return im.convert("RGB")
