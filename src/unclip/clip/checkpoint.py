"""Self-describing CLIP model folders (DESIGN.md §2 "Checkpoints are self-describing").

A folder holds ``config.json`` (format name and version, the typed model config, tokenizer settings),
``model.safetensors`` (weights; nothing pickled) and ``tokenizer.json``: everything needed to encode captions
and images. Loading is strict and writing atomic (``unclip.model_folder``).

:func:`load_clip` opens any CLIP folder we understand: ours, or a Hugging Face ``transformers`` CLIP.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unclip.clip.model import CLIP, CLIPConfig
from unclip.clip.tokenizer import Tokenizer
from unclip.model_folder import (
    CONFIG_FILE,
    CheckpointError,
    config_from_dict,
    load_weights,
    read_meta,
    read_weights,
    write_model_folder,
)

if TYPE_CHECKING:
    from unclip.clip.lit import LiTCLIP

__all__ = ["CheckpointError", "from_pretrained", "load_clip", "save_pretrained"]

FORMAT = "unclip-clip"
FORMAT_VERSION = 1


def save_pretrained(model: CLIP, folder: str | Path, half: bool = False) -> Path:
    """Write ``model`` (weights, config, tokenizer) into ``folder`` atomically; returns the folder (``half``:
    float16 parameters, see ``write_model_folder``)."""
    if model.tokenizer is None:
        raise ValueError("a CLIP without a tokenizer cannot be saved as a model folder (it could not encode text)")
    tokenizer = model.tokenizer
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(model.config),
        "tokenizer": tokenizer.settings(),
    }
    return write_model_folder(folder, meta, model, extra=tokenizer.save, half=half)


def from_pretrained(folder: str | Path, device: torch.device | str = "cpu") -> CLIP:
    """Load a folder written by :func:`save_pretrained`, strictly."""
    folder = Path(folder)
    meta = read_meta(folder, FORMAT, FORMAT_VERSION, {"config", "tokenizer"}, "CLIP model")
    config = config_from_dict(CLIPConfig, meta.get("config"), "config")
    tokenizer = Tokenizer.load(folder, meta.get("tokenizer") or {})
    model = CLIP(config, tokenizer)
    load_weights(model, read_weights(folder), str(folder / "model.safetensors"))
    return model.to(device).eval()


def _format_of(folder: Path) -> Any:
    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def load_clip(folder: str | Path, device: torch.device | str = "cpu") -> CLIP | LiTCLIP:
    """Any CLIP folder: ours (``save_pretrained``), a LiT CLIP (``unclip.clip.lit``) or a Hugging Face
    ``transformers`` CLIP (see ``unclip.clip.hf``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CLIP model folder {folder} does not exist")
    if _format_of(folder) == FORMAT:
        return from_pretrained(folder, device)
    if _format_of(folder) == "unclip-lit":
        from unclip.clip.lit import load_lit  # its towers load only when a LiT folder is opened

        return load_lit(folder, device)
    from unclip.clip import hf

    if hf.is_hf_clip(folder):
        return hf.load_hf_clip(folder, device=device)
    raise CheckpointError(
        f"{folder} is not a CLIP checkpoint: expected an unclip CLIP folder (config.json with format {FORMAT!r}) "
        "or a transformers CLIP folder (config.json with model_type 'clip', or text_encoder/ + image_encoder/)"
    )
