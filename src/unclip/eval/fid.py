"""FID between two image folders (or feature sets), with the checks that make the number trustworthy.

Sample-size policy. FID estimates a distance between two Gaussians from samples, and the estimate is biased
upwards, strongly so at small N (Chong & Forsyth, 2020); below 2,048 images (the feature dimension) the
covariances are also singular. So:

- fewer than ``MIN_IMAGES`` = 2 readable images in a set: refused (``ValueError``), since a covariance needs two;
- fewer than ``WARN_BELOW`` = 2,048: computed (the Fréchet distance stays exact for singular covariances, see
  :mod:`unclip.eval.frechet`) with a warning that gives the count; compare such FIDs only at equal N.

Mixed image sizes are resized to 299×299 like any other size (bilinear, antialiased), with a note; unreadable
files are skipped and counted.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .features import FolderFeatures, folder_features
from .frechet import frechet_distance_from_features

MIN_IMAGES = 2
WARN_BELOW = 2048


@dataclass
class FIDResult:
    fid: float
    n_a: int
    n_b: int
    skipped_a: list[tuple[str, str]] = field(default_factory=list)
    skipped_b: list[tuple[str, str]] = field(default_factory=list)
    cached_a: bool = False
    cached_b: bool = False
    seconds_features: float = 0.0  # extraction (or cache reads) for both folders
    seconds_distance: float = 0.0
    images_per_second: float | None = None  # extraction throughput, None when both came from the cache
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_sample_size(n: int, name: str) -> str | None:
    """Raise below ``MIN_IMAGES``; return a warning message below ``WARN_BELOW``, else None."""
    if n < MIN_IMAGES:
        raise ValueError(f"{name}: FID needs at least {MIN_IMAGES} readable images, found {n}")
    if n < WARN_BELOW:
        return (
            f"{name}: only {n} images; FID is biased upwards below {WARN_BELOW} (the feature dimension), "
            "so compare it only against FIDs computed at the same sample size"
        )
    return None


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID of two (N, 2048) Inception feature sets (exact float64 Fréchet distance); warns below ``WARN_BELOW``."""
    for f, name in ((features_a, "first set"), (features_b, "second set")):
        msg = check_sample_size(len(f), name)
        if msg:
            warnings.warn(msg, UserWarning, stacklevel=2)
    return frechet_distance_from_features(features_a, features_b)


def fid_folders(
    dir_a: str | Path,
    dir_b: str | Path,
    *,
    extractor=None,
    batch_size: int = 32,
    cache_dir: str | Path | None = "default",
    device: str = "cpu",
    progress: bool | None = None,
) -> FIDResult:
    """FID between the images directly in two folders.

    ``extractor`` defaults to :class:`~unclip.eval.inception.InceptionFeatures` on ``device``; features are cached
    in ``cache_dir`` (``"default"``: ``$UNCLIP_CACHE/fid`` or ``~/.cache/unclip/fid``; ``None``: no cache).
    Warnings are both issued (``warnings.warn``) and returned in the result.
    """
    from .inception import InceptionFeatures, default_cache_dir

    if cache_dir == "default":
        cache_dir = default_cache_dir()
    for d in (dir_a, dir_b):  # fail on a bad path before loading the network
        if not Path(d).is_dir():
            raise FileNotFoundError(f"image folder {str(d)!r} does not exist or is not a folder")
    if extractor is None:
        extractor = InceptionFeatures(device=device)
    sets: list[FolderFeatures] = []
    messages: list[str] = []
    for d in (dir_a, dir_b):
        if sets and Path(d).resolve() == Path(dir_a).resolve():
            sets.append(sets[0])  # a folder against itself: read it once, cache or not
            continue
        ff = folder_features(d, extractor, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
        msg = check_sample_size(ff.n, str(d))  # raises below the floor, before the next folder is read
        if ff.skipped:
            messages.append(f"{d}: skipped {len(ff.skipped)} unreadable file(s), e.g. {ff.skipped[0][0]}")
        if len(ff.sizes) > 1:
            messages.append(f"{d}: {len(ff.sizes)} different image sizes, each resized to 299x299")
        if msg:
            messages.append(msg)
        sets.append(ff)
    for msg in messages:
        warnings.warn(msg, UserWarning, stacklevel=2)
    start = time.perf_counter()
    fid = frechet_distance_from_features(sets[0].features, sets[1].features)
    extracted = [ff for ff in {id(ff): ff for ff in sets}.values() if not ff.from_cache]
    seconds_extracting = sum(ff.seconds for ff in extracted)
    n_extracted = sum(ff.n + len(ff.skipped) for ff in extracted)
    return FIDResult(
        fid=fid,
        n_a=sets[0].n,
        n_b=sets[1].n,
        skipped_a=sets[0].skipped,
        skipped_b=sets[1].skipped,
        cached_a=sets[0].from_cache,
        cached_b=sets[1].from_cache,
        seconds_features=sum(ff.seconds for ff in {id(ff): ff for ff in sets}.values()),
        seconds_distance=time.perf_counter() - start,
        images_per_second=(n_extracted / seconds_extracting) if extracted and seconds_extracting > 0 else None,
        warnings=messages,
    )
