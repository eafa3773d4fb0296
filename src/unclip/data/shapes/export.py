"""Writing Shapes-world samples and prompt suites to disk, and judging a folder of images.

Folder layout (the img2dataset / WebDataset key layout): ``KEY.png`` (image), ``KEY.txt`` (caption) and
``KEY.json`` (scene graph, or for a prompt a ``{"prompt", "category", "requirement"}`` record). Shards are
uncompressed tar files of the same members, read by ``webdataset`` or any tar reader.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .judging import detect
from .prompts import Prompt
from .requirements import CATEGORIES, Requirement, requirements_for_scene
from .scene import SceneGraph
from .world import Sample, ShapesWorld

CONTACT_SHEET = "contact_sheet.png"  # the overview unclip.pipeline.outputs writes beside generated images
GENEVAL_METADATA = "evaluation_metadata.jsonl"  # GenEval's name for its prompt file


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _members(sample: Sample) -> list[tuple[str, bytes]]:
    return [
        (f"{sample.key}.png", _png_bytes(sample.image)),
        (f"{sample.key}.txt", sample.caption.encode()),
        (f"{sample.key}.json", json.dumps(sample.scene.to_json(), indent=1).encode()),
    ]


def write_folder(world: ShapesWorld, out: Path, n: int, start: int = 0, progress: Callable | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        for name, data in _members(world[i]):
            (out / name).write_bytes(data)
        if progress:
            progress(1)
    return n


def write_shards(
    world: ShapesWorld, out: Path, n: int, shard_size: int = 1000, start: int = 0, progress: Callable | None = None
) -> list[Path]:
    """Tar shards ``shapes-{split}-{k:06d}.tar`` of ``shard_size`` samples each."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, first in enumerate(range(start, start + n, shard_size)):
        path = out / f"shapes-{world.split}-{k:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(first, min(first + shard_size, start + n)):
                for name, data in _members(world[i]):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0  # fixed mtime: identical inputs give identical shards
                    tar.addfile(info, io.BytesIO(data))
                if progress:
                    progress(1)
        paths.append(path)
    return paths


def write_prompts(prompts: Iterable[Prompt], out: Path) -> Path:
    """``prompts.jsonl`` (one prompt record per line) plus ``KEY.txt`` and ``KEY.json`` for each prompt, so a
    generator can write ``KEY.png`` beside them and ``unclip judge`` can score the folder; and the same prompts in
    GenEval's schema, ``evaluation_metadata.jsonl``, for tools made for GenEval's layout."""
    out.mkdir(parents=True, exist_ok=True)
    lines, geneval = [], []
    for p in prompts:
        rec = p.to_json()
        lines.append(json.dumps(rec))
        geneval.append(json.dumps({**p.requirement.to_geneval(), "prompt": p.text}))
        (out / f"{p.key}.txt").write_text(p.text + "\n")
        (out / f"{p.key}.json").write_text(json.dumps(rec, indent=1))
    (out / GENEVAL_METADATA).write_text("\n".join(geneval) + "\n")
    path = out / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: unreadable image ({err})") from err


def requirements_from_json(path: Path) -> dict[str, Requirement]:
    """The requirements a ``KEY.json`` states: one for a prompt record, one per category for a scene graph."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ValueError(
            f"{path}: missing (every image needs its record: KEY.json beside KEY.png, or GenEval's metadata.jsonl)"
        ) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object")
    try:
        return requirements_of(record)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def requirements_of(record: dict) -> dict[str, Requirement]:
    """A record's requirements: our prompt record (``requirement``), GenEval's metadata (``tag`` and
    ``include``), or a scene graph (one requirement per category it shows)."""
    if "requirement" in record:
        req = Requirement.from_json(record["requirement"])
    elif "tag" in record and "include" in record:
        req = Requirement.from_geneval(record)
    elif "format" in record:
        return requirements_for_scene(SceneGraph.from_json(record))
    else:
        raise ValueError(
            "states nothing to judge: expected a prompt record with 'requirement', GenEval's 'tag' and 'include', "
            "or a Shapes-world scene graph"
        )
    return {req.category: req}


def images_to_judge(folder: Path) -> list[tuple[Path, Path]]:
    """(image, record) pairs: ``KEY.png`` with ``KEY.json``, or in GenEval's layout (``00000/metadata.jsonl``,
    ``00000/samples/0000.png``) each sample with its folder's metadata, by GenEval's own rules (numbered
    subfolders, images named by digits). The contact sheet that generation writes beside its images is left out."""
    pairs = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
        samples = sub / "samples"
        names = sorted(p.name for p in samples.iterdir()) if samples.is_dir() else []
        pairs += [(samples / n, sub / "metadata.jsonl") for n in names if re.fullmatch(r"\d+\.png", n)]
    return pairs or [
        (png, png.with_suffix(".json")) for png in sorted(folder.glob("*.png")) if png.name != CONTACT_SHEET
    ]


def judge_folder(folder: Path, progress: Callable | None = None) -> dict:
    """Judge every ``KEY.png`` in ``folder`` against its ``KEY.json`` (or, in GenEval's layout, every sample against
    its folder's ``metadata.jsonl``); bad files are skipped and reported.

    Returns ``{"categories": {cat: {"accuracy", "n"}}, "overall", "judged", "skipped": [{"file", "error"}]}``
    where ``overall`` is the mean of the category accuracies (GenEval's overall score).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    hits: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    skipped, judged = [], 0
    for png, record in images_to_judge(folder):
        try:
            reqs = requirements_from_json(record)
            image = load_image(png)
            found = detect(image)  # once per image; every requirement is checked against the same detections
            for cat, req in reqs.items():
                hits[cat].append(req.satisfied_by(found))
            judged += 1
        except ValueError as err:
            skipped.append({"file": str(png.relative_to(folder)), "error": str(err)})
        if progress:
            progress(1)
    cats = {c: {"accuracy": float(np.mean(v)), "n": len(v)} for c, v in hits.items() if v}
    overall = float(np.mean([c["accuracy"] for c in cats.values()])) if cats else None
    return {"categories": cats, "overall": overall, "judged": judged, "skipped": skipped}
