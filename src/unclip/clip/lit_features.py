"""Tower features of a dataset, computed once: LiT's heads then train from them in milliseconds a step.

Both LiT towers are frozen (``unclip.clip.lit``), so each (image, caption) pair's tower features never change;
running Inception-v3 (about 0.14 s per image on 2 CPU cores) on every step would cost ~2,000× the heads' own
work. A cache folder holds, for the first ``pairs`` pairs of a dataset in the source's order:

- ``features.safetensors``: ``image`` ``(N, image_dim)`` and ``text`` ``(N, text_dim)`` float32 (the pooled
  tower features), and with ``token_states`` also ``states`` ``(N, L, width)`` float16 and ``mask`` ``(N, L)``;
- ``captions.json``: the N captions (row order);
- ``manifest.json``: format and version, and the **identity** of what made it — each tower's identity
  (package, version, weight size, settings), the data spec, ``pairs``, the image size, whether token states are
  stored — plus the counts. :func:`open_feature_cache` compares it with the identity it is asked for and raises
  :class:`StaleCacheError` naming every difference, so features of other towers or data are never used.

The folder is written atomically (``unclip.atomic``): an interrupted build leaves no cache, never half of one.
Unreadable samples are skipped and counted, as in ``unclip embed``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from unclip.atomic import atomic_directory
from unclip.data.datasets import StreamingSource, parse_data_spec
from unclip.data.embed import PairBatches
from unclip.data.loader import mix_seed

FORMAT, FORMAT_VERSION = "unclip-lit-features", 1
MANIFEST, FEATURES, CAPTIONS = "manifest.json", "features.safetensors", "captions.json"


class StaleCacheError(ValueError):
    """A feature cache made by other towers, data or settings than the ones asked for."""


def cache_identity(
    towers: dict[str, Any], data: str, pairs: int | None, image_size: int, token_states: bool = False
) -> dict[str, Any]:
    """What a cache's features depend on; two caches with equal identities hold equal features."""
    return {"towers": towers, "data": data, "pairs": pairs, "image_size": image_size, "token_states": token_states}


def default_cache_dir(identity: dict[str, Any]) -> Path:
    """``$UNCLIP_CACHE/lit/KEY`` (else ``~/.cache/unclip/lit/KEY``), KEY a digest of the identity."""
    root = os.environ.get("UNCLIP_CACHE")
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return (Path(root) if root else Path.home() / ".cache" / "unclip") / "lit" / key


@dataclass
class FeatureCache:
    image: Tensor  # (N, image_dim) float32
    text: Tensor  # (N, text_dim) float32
    captions: list[str]
    manifest: dict[str, Any]
    states: Tensor | None = None  # (N, L, width) float16
    mask: Tensor | None = None  # (N, L) bool
    _perms: dict[tuple[int, int], Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def rows(self, positions: Tensor, seed: int = 0) -> Tensor:
        """Rows for global stream positions: a fresh permutation of the cache per epoch, from (seed, epoch) only."""
        n, out = len(self), []
        for p in positions.tolist():
            epoch, slot = divmod(int(p), n)
            key = (seed, epoch)
            if key not in self._perms:
                if len(self._perms) > 2:  # a batch spans at most two epochs
                    self._perms.pop(min(self._perms))
                self._perms[key] = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
            out.append(int(self._perms[key][slot]))
        return torch.tensor(out, dtype=torch.long)


def _identity_differences(saved: Any, wanted: Any, where: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(saved) | set(wanted)):
            sub = f"{where}.{key}" if where else key
            out += _identity_differences(saved.get(key, "<missing>"), wanted.get(key, "<missing>"), sub)
        return out
    return [] if saved == wanted else [f"{where}: cache has {saved!r}, wanted {wanted!r}"]


@torch.no_grad()
def build_feature_cache(
    folder: str | Path, model: Any, data: str, pairs: int | None = None, *, batch_size: int = 32,
    token_states: bool = False, progress: bool = True,
) -> FeatureCache:  # fmt: skip
    """Run ``model``'s frozen towers (a :class:`~unclip.clip.lit.LiTCLIP`) over the first ``pairs`` pairs of
    ``data`` (all of a finite dataset when ``None``) and write the cache into ``folder``."""
    if pairs is not None and pairs < 1:
        raise ValueError(f"pairs must be >= 1 (or None for a whole finite dataset), got {pairs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    source = parse_data_spec(data, model.image_size)
    size = None if isinstance(source, StreamingSource) else source.size()  # shards: a stream of unknown length
    if size is None and pairs is None and not isinstance(source, StreamingSource):
        raise ValueError(f"data {data!r} is unlimited (Shapes world): give the number of pairs to cache")
    identity = cache_identity(model.tower_identities(), data, pairs, model.image_size, token_states)
    parts: dict[str, list[Tensor]] = {"image": [], "text": [], "states": [], "mask": []}
    captions: list[str] = []
    batches = PairBatches(source, pairs, model.image_size, batch_size, progress=progress, desc="LiT tower features")
    for images, batch_captions in batches:
        parts["image"].append(model.image_features(images).cpu())
        enc = model.text_features(batch_captions)
        parts["text"].append(enc.embedding.cpu())
        if token_states:
            parts["states"].append(enc.token_states.half().cpu())
            parts["mask"].append(enc.mask.cpu())
        captions.extend(batch_captions)
    skipped = batches.skipped
    if not captions:
        raise ValueError(f"data {data!r} gave no usable (image, caption) pair ({skipped} skipped)")
    tensors = {k: torch.cat(v).contiguous() for k, v in parts.items() if v}
    if "mask" in tensors:
        tensors["mask"] = tensors["mask"].to(torch.uint8)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "identity": identity, "count": len(captions),
        "skipped": skipped, "source_size": size,
        "dims": {k: list(v.shape[1:]) for k, v in tensors.items()},
    }  # fmt: skip
    with atomic_directory(folder) as tmp:
        save_file(tensors, str(tmp / FEATURES), metadata={"format": FORMAT})
        (tmp / CAPTIONS).write_text(json.dumps(captions, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return open_feature_cache(folder, identity)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """A cache folder's checked manifest (no tensor is read)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a LiT feature cache: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("format_version")) != (
        FORMAT,
        FORMAT_VERSION,
    ):
        got = (manifest.get("format"), manifest.get("format_version")) if isinstance(manifest, dict) else manifest
        raise ValueError(f"{path}: format/version {got!r}, expected {FORMAT!r} version {FORMAT_VERSION}")
    return manifest


def check_identity(folder: str | Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the cache in ``folder``, or :class:`StaleCacheError` when it was made by anything else."""
    manifest = read_manifest(folder)
    problems = _identity_differences(manifest.get("identity"), identity)
    if problems:
        raise StaleCacheError(
            f"LiT feature cache {str(folder)!r} was made by other towers, data or settings ("
            + "; ".join(problems)
            + "): delete it to rebuild, or point model.cache to another folder"
        )
    return manifest


def open_feature_cache(folder: str | Path, identity: dict[str, Any] | None = None) -> FeatureCache:
    """Load a cache; with ``identity``, refuse (:class:`StaleCacheError`) one made by anything else."""
    folder = Path(folder)
    manifest = read_manifest(folder) if identity is None else check_identity(folder, identity)
    try:
        tensors = load_file(str(folder / FEATURES))
        captions = json.loads((folder / CAPTIONS).read_text(encoding="utf-8"))
    except Exception as err:  # safetensors and json raise their own error types for damaged files
        raise ValueError(f"LiT feature cache {str(folder)!r} is damaged ({err}); delete it to rebuild") from err
    n = manifest.get("count")
    wanted = {"image", "text"} | ({"states", "mask"} if manifest["identity"].get("token_states") else set())
    bad = [k for k in sorted(wanted) if k not in tensors or tensors[k].shape[0] != n]
    if bad or not isinstance(captions, list) or len(captions) != n:
        raise ValueError(f"LiT feature cache {str(folder)!r}: tensors {bad} or captions do not hold count={n} rows")
    mask = tensors["mask"].bool() if "mask" in tensors else None
    return FeatureCache(tensors["image"], tensors["text"], captions, manifest, tensors.get("states"), mask)


def ensure_feature_cache(
    folder: str | Path, identity: dict[str, Any], build: Any, *, rebuild: bool = False
) -> FeatureCache:
    """Open the cache in ``folder`` if it exists (checked against ``identity``), else ``build(folder)`` it."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file() and not rebuild:
        return open_feature_cache(folder, identity)
    cache = build(folder)
    problems = _identity_differences(cache.manifest["identity"], identity)
    if problems:  # the builder's towers are not the ones the identity names
        raise StaleCacheError(f"built LiT features differ from what was asked: {'; '.join(problems)}")
    return cache


def delivered_mismatch(cache: FeatureCache, positions: Sequence[int], captions: Sequence[str]) -> str | None:
    """Why a training batch cannot come from the cached dataset, or ``None`` when it can (or cannot be told).

    The ``lit`` stage trains on cached rows and uses the engine's batches only for their stream positions, so
    ``--data`` must name the cached dataset. Shapes world delivers scene ``p`` at position ``p``, which must be
    row ``p``; any other dataset cached whole must deliver captions the cache holds.
    """
    m, n = cache.manifest, len(cache)
    if str(m["identity"]["data"]).partition(":")[0] == "shapes":
        for p, c in zip(positions, captions, strict=True):
            if int(p) < n and cache.captions[int(p)] != c:
                return f"position {int(p)} delivered {c!r} but the cache's row {int(p)} is {cache.captions[int(p)]!r}"
        return None
    if m.get("source_size") is not None and m["count"] + m["skipped"] >= m["source_size"]:
        known = set(cache.captions)
        for c in captions:
            if c not in known:
                return f"the batch holds the caption {c!r}, which the cached dataset does not"
    return None
