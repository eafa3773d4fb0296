"""Precision/recall and diversity of image folders: the feature-space metrics of :mod:`unclip.eval`, run on the
folders that ``unclip generate`` writes, with the FID feature cache shared.

Both read features through :func:`unclip.eval.features.folder_features`, so a folder whose Inception features were
computed for FID is not read again (same cache key: same files, same extractor).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .diversity import mean_pairwise_distance
from .features import FolderFeatures, folder_features

GROUP_BY = ("prompt", "none")


def _resolve_cache(cache_dir):
    from .inception import default_cache_dir

    return default_cache_dir() if cache_dir == "default" else cache_dir


def _inception(extractor, device):
    from .inception import InceptionFeatures

    return InceptionFeatures(device=device) if extractor is None else extractor


def _notes(ff: FolderFeatures, name: str) -> list[str]:
    notes = []
    if ff.skipped:
        notes.append(f"{name}: skipped {len(ff.skipped)} unreadable file(s), e.g. {ff.skipped[0][0]}")
    if len(ff.sizes) > 1:
        notes.append(f"{name}: {len(ff.sizes)} different image sizes, each resized to 299x299")
    return notes


@dataclass
class PrecisionRecallResult:
    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int
    skipped_real: list[tuple[str, str]] = field(default_factory=list)
    skipped_fake: list[tuple[str, str]] = field(default_factory=list)
    cached_real: bool = False
    cached_fake: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def precision_recall_folders(
    dir_real: str | Path,
    dir_fake: str | Path,
    *,
    k: int = 3,
    extractor=None,
    batch_size: int = 32,
    cache_dir: str | Path | None = "default",
    device: str = "cpu",
    progress: bool | None = None,
) -> PrecisionRecallResult:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``dir_fake`` against ``dir_real``.

    Features are the FID Inception's (or ``extractor``'s), cached as for :func:`unclip.eval.fid.fid_folders`.
    Each folder needs at least k + 1 readable images (a k-th neighbour other than the sample itself).
    """
    from .precision_recall import precision_recall

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    for d in (dir_real, dir_fake):  # fail on a bad path before loading the network
        if not Path(d).is_dir():
            raise FileNotFoundError(f"image folder {str(d)!r} does not exist or is not a folder")
    start = time.perf_counter()
    extractor = _inception(extractor, device)
    cache_dir = _resolve_cache(cache_dir)
    sets: list[FolderFeatures] = []
    notes: list[str] = []
    for d in (dir_real, dir_fake):
        ff = folder_features(d, extractor, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
        if ff.n < k + 1:
            raise ValueError(f"{d}: precision/recall with k={k} needs at least {k + 1} readable images, found {ff.n}")
        notes += _notes(ff, str(d))
        sets.append(ff)
    pr = precision_recall(sets[0].features, sets[1].features, k=k)
    return PrecisionRecallResult(
        precision=pr.precision,
        recall=pr.recall,
        k=k,
        n_real=pr.n_real,
        n_fake=pr.n_fake,
        skipped_real=sets[0].skipped,
        skipped_fake=sets[1].skipped,
        cached_real=sets[0].from_cache,
        cached_fake=sets[1].from_cache,
        warnings=notes,
        seconds=time.perf_counter() - start,
    )


@dataclass
class DiversityResult:
    inception: float  # mean over groups of the mean pairwise L2 distance of Inception features
    clip: float | None  # the same with cosine distance of CLIP image embeddings, when a CLIP was given
    group_by: str
    n_images: int
    n_groups: int
    groups: list[dict] = field(default_factory=list)  # {"prompt", "n", "inception", "clip"} per group
    skipped: list[tuple[str, str]] = field(default_factory=list)  # images left out, with the reason
    inception_metric: str = "l2"
    clip_metric: str = "cosine"
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(folder: Path, names: list[str], group_by: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    if group_by == "none":
        return {"": list(names)}, []
    from .sidecars import read_prompts

    found = read_prompts(folder, names)
    return found.groups(), found.skipped


def diversity_folder(
    folder: str | Path,
    *,
    group_by: str = "prompt",
    extractor=None,
    clip=None,
    clip_id: str | None = None,
    batch_size: int = 32,
    cache_dir: str | Path | None = "default",
    device: str = "cpu",
    progress: bool | None = None,
) -> DiversityResult:
    """Sample diversity of a folder: the mean pairwise distance between the images of each prompt, averaged
    over prompts (§5.2: unCLIP keeps more diversity than GLIDE as guidance grows).

    ``group_by="prompt"`` groups images by the prompt in their sidecars (:mod:`unclip.eval.sidecars`; images
    without one are skipped); ``"none"`` treats the whole folder as one group. Groups of one image are skipped.
    Inception features use L2 distance; ``clip`` (a CLIP encoder) adds cosine distance of its image embeddings.
    """
    from .clip_score import CLIPImageFeatures

    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist or is not a folder")
    start = time.perf_counter()
    cache_dir = _resolve_cache(cache_dir)
    ff = folder_features(folder, _inception(extractor, device), batch_size=batch_size, cache_dir=cache_dir,
                         progress=progress)  # fmt: skip
    if ff.n == 0:
        raise ValueError(f"{folder}: no readable images")
    groups, skipped = _groups(folder, ff.files, group_by)
    small = {p: names for p, names in groups.items() if len(names) < 2}
    skipped += [(names[0], f"the only image of prompt {p!r}") for p, names in small.items()]
    groups = {p: names for p, names in groups.items() if len(names) >= 2}
    if not groups:
        raise ValueError(
            f"{folder}: diversity needs at least 2 images of one prompt, found {len(small)} group(s) of a single "
            "image (generate with --n 2 or more)"
        )
    spaces = {"inception": (ff, "l2")}
    if clip is not None:
        ff_clip = folder_features(folder, CLIPImageFeatures(clip, clip_id), batch_size=batch_size,
                                  cache_dir=cache_dir, progress=progress)  # fmt: skip
        spaces["clip"] = (ff_clip, "cosine")
    rows_of = {space: {name: i for i, name in enumerate(f.files)} for space, (f, _) in spaces.items()}
    per_group = []
    for prompt, names in groups.items():
        entry: dict = {"prompt": prompt, "n": len(names), "inception": None, "clip": None}
        for space, (f, metric) in spaces.items():
            feats = f.features[[rows_of[space][n] for n in names]]
            entry[space] = mean_pairwise_distance(feats, metric)
        per_group.append(entry)
    # Each prompt counts once, however many samples it has (as unclip.eval.diversity.diversity does).
    means = {space: float(np.mean([g[space] for g in per_group])) for space in spaces}
    return DiversityResult(
        inception=means["inception"],
        clip=means.get("clip"),
        group_by=group_by,
        n_images=sum(g["n"] for g in per_group),
        n_groups=len(per_group),
        groups=per_group,
        skipped=ff.skipped + skipped,
        warnings=_notes(ff, str(folder)),
        seconds=time.perf_counter() - start,
    )
