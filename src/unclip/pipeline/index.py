"""A pipeline folder's index (``pipeline.json``): which component folders it holds and its default settings.

One reader for everything that opens a pipeline folder — the pipeline itself, and the evaluations that need only
some of its parts (the CLIP, or the CLIP and the prior) — so every one of them validates the index the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unclip.model_folder import CheckpointError, read_meta

FORMAT, FORMAT_VERSION, INDEX_FILE = "unclip-pipeline", 1, "pipeline.json"
REQUIRED = ("clip", "prior", "decoder")


def is_pipeline_folder(folder: str | Path) -> bool:
    return (Path(folder) / INDEX_FILE).is_file()


def read_index(folder: str | Path, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """The validated index of a pipeline folder: ``format``, ``components`` (folder names) and ``settings``.

    ``required`` names the components the caller will open (a CLIP-only evaluation needs only ``clip``).
    """
    folder = Path(folder)
    index = folder / INDEX_FILE
    if not index.is_file():
        raise FileNotFoundError(
            f"{folder} is not an unclip model folder: it has no {INDEX_FILE} (nor a diffusers unCLIP model_index.json)"
        )
    meta = read_meta(folder, FORMAT, FORMAT_VERSION, {"components", "settings"}, "unclip model", file=INDEX_FILE)
    parts = meta.get("components")
    bad = [k for k in required if not isinstance(parts, dict) or not isinstance(parts.get(k), str)]
    ups = parts.get("upsamplers", []) if isinstance(parts, dict) else []
    if bad or not isinstance(ups, list) or not all(isinstance(u, str) for u in ups):
        raise CheckpointError(
            f"{index}: components must name the {', '.join(required)} folder(s) and a list of upsamplers"
        )
    if isinstance(parts, dict) and not isinstance(parts.get("noised_clip", ""), str):
        raise CheckpointError(f"{index}: components.noised_clip, when present, must name a folder")
    if not isinstance(meta.get("settings", {}), dict):
        raise CheckpointError(f"{index}: settings must be an object")
    return meta


def component(folder: str | Path, name: str) -> Path:
    """The folder of component ``name`` (``clip``, ``prior`` or ``decoder``) of a pipeline folder."""
    return Path(folder) / read_index(folder, (name,))["components"][name]


def clip_folder(folder: str | Path) -> Path:
    """A CLIP model folder as given, or the CLIP component of a pipeline folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist or is not a folder")
    return component(folder, "clip") if is_pipeline_folder(folder) else folder
