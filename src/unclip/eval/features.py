"""Image folders → Inception features, in batches with a progress bar, cached on disk.

The cache key is (resolved folder path, every image file's name, size and modification time, the extractor's
id), hashed; the value is an ``.npz`` with the features, the files they came from and the files skipped, so a
cache hit reports the same counts as the run that filled it. Touching, adding, removing or replacing any image
changes the key, so stale features are never served. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from unclip.data.shapes.export import CONTACT_SHEET

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

Extractor = Callable[[torch.Tensor], np.ndarray]


@dataclass
class FolderFeatures:
    """The features of one folder and what it took to get them."""

    folder: Path
    features: np.ndarray  # (N, D) float32, one row per readable image, in ``files`` order
    files: list[str]  # names of the images that gave features, sorted
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason) of unreadable files
    sizes: list[tuple[int, int]] = field(default_factory=list)  # distinct (H, W) among the readable images
    from_cache: bool = False
    seconds: float = 0.0  # wall time of extraction (or of the cache read)

    @property
    def n(self) -> int:
        return len(self.files)


# Files ``unclip generate`` and the gallery write beside the samples: summaries, not samples.
NOT_SAMPLES = frozenset({CONTACT_SHEET})


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name; contact sheets are not samples."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist or is not a folder")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in NOT_SAMPLES
    )


def read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB; greyscale, palette and alpha images are converted the PIL way."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _read_all(paths: Sequence[Path], skipped: list[tuple[str, str]]) -> Iterator[tuple[str, np.ndarray]]:
    from PIL import Image

    for p in paths:
        try:
            yield p.name, read_image(p)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            skipped.append((p.name, f"{type(err).__name__}: {err}"))


def _batches(images: Iterator[tuple[str, np.ndarray]], size: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    batch: list[tuple[str, np.ndarray]] = []
    for item in images:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_batch(extractor: Extractor, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Features of uint8 (H, W, 3) arrays of possibly different sizes: same-size runs go through together."""
    out: list[np.ndarray | None] = [None] * len(arrays)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        by_size.setdefault(a.shape, []).append(i)
    for idx in by_size.values():
        x = torch.from_numpy(np.stack([arrays[i] for i in idx])).permute(0, 3, 1, 2).float() / 255.0
        feats = extractor(x)
        for row, i in enumerate(idx):
            out[i] = feats[row]
    return np.stack(out).astype(np.float32)  # type: ignore[arg-type]


def cache_key(folder: Path, paths: Sequence[Path], extractor_id: str) -> str:
    entries = []
    for p in paths:
        st = p.stat()
        entries.append([p.name, st.st_size, st.st_mtime_ns])
    blob = json.dumps({"folder": str(folder.resolve()), "files": entries, "model": extractor_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _load_cache(path: Path, folder: Path) -> FolderFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return FolderFeatures(
                folder=folder,
                features=z["features"].astype(np.float32),
                files=[str(s) for s in z["files"]],
                skipped=[(str(a), str(b)) for a, b in z["skipped"].reshape(-1, 2)],
                sizes=[(int(h), int(w)) for h, w in z["sizes"].reshape(-1, 2)],
                from_cache=True,
            )
    except (OSError, KeyError, ValueError):
        return None  # unreadable or from an older layout: recompute and overwrite


def _save_cache(path: Path, ff: FolderFeatures) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                features=ff.features,
                files=np.array(ff.files, dtype=str),
                skipped=np.array(ff.skipped, dtype=str).reshape(-1, 2),
                sizes=np.array(ff.sizes, dtype=np.int64).reshape(-1, 2),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def folder_features(
    folder: str | Path,
    extractor: Extractor,
    *,
    extractor_id: str | None = None,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> FolderFeatures:
    """Features of every readable image directly in ``folder``; unreadable files are skipped and listed.

    ``extractor`` maps float (B, 3, H, W) images in [0, 1] to (B, D) features (an :class:`InceptionFeatures`).
    With ``cache_dir`` (and an ``extractor_id``, taken from ``extractor.id`` when it has one) results are read
    from and written to ``cache_dir/<key>.npz``. ``progress=None`` shows a bar only on a terminal.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    folder = Path(folder)
    paths = list_images(folder)
    extractor_id = extractor_id or getattr(extractor, "id", None)
    cache_path = None
    if cache_dir is not None and extractor_id is not None:
        cache_path = Path(cache_dir) / f"{cache_key(folder, paths, extractor_id)}.npz"
        if cache_path.is_file():
            start = time.perf_counter()
            hit = _load_cache(cache_path, folder)
            if hit is not None:
                hit.seconds = time.perf_counter() - start
                return hit

    start = time.perf_counter()
    skipped: list[tuple[str, str]] = []
    names: list[str] = []
    feats: list[np.ndarray] = []
    sizes: set[tuple[int, int]] = set()
    disable = None if progress is None else not progress
    with tqdm(total=len(paths), unit="img", desc=f"features {folder.name}", disable=disable, leave=False) as bar:
        for batch in _batches(_read_all(paths, skipped), batch_size):
            arrays = [a for _, a in batch]
            sizes.update((a.shape[0], a.shape[1]) for a in arrays)
            feats.append(extract_batch(extractor, arrays))
            names.extend(n for n, _ in batch)
            bar.update(len(names) + len(skipped) - bar.n)  # skipped files count as done too
    dim = feats[0].shape[1] if feats else 0
    result = FolderFeatures(
        folder=folder,
        features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
        files=names,
        skipped=skipped,
        sizes=sorted(sizes),
        seconds=time.perf_counter() - start,
    )
    if cache_path is not None:
        _save_cache(cache_path, result)
    return result
