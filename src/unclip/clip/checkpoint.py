"""Self-describing CLIP model folders (DESIGN.md §2 "Checkpoints are self-describing").

A folder holds ``config.json`` (format name and version, the typed model config, tokenizer settings),
``model.safetensors`` (weights; nothing pickled) and ``tokenizer.json``: everything needed to encode captions
and images. Loading is strict: an unknown format or version, unknown or missing config keys, missing or
unexpected weights and shape mismatches are errors that say exactly what is wrong.

:func:`load_clip` opens any CLIP folder we understand: ours, or a Hugging Face ``transformers`` CLIP.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unclip.clip.model import CLIP, CLIPConfig
from unclip.clip.tokenizer import Tokenizer

FORMAT = "unclip-clip"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"

T = TypeVar("T")


class CheckpointError(ValueError):
    """A folder or weight file that cannot be loaded, with the reason."""


def config_from_dict(cls: type[T], d: Any, where: str) -> T:
    """Dataclass ``cls`` (nested dataclasses allowed) from JSON, refusing unknown keys."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if unknown:
        raise CheckpointError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in d.items():
        hint = hints[k]
        kwargs[k] = config_from_dict(hint, v, f"{where}.{k}") if dataclasses.is_dataclass(hint) else v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: {err}") from err


def check_state_dict(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """Raise :class:`CheckpointError` naming missing/unexpected keys and shape mismatches."""
    own = module.state_dict()
    problems = []
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing:
        problems.append(f"missing key(s) {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s) {_few(unexpected)}")
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"shape mismatch {_few(shapes)}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def _few(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def load_weights(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    check_state_dict(module, state, where)
    module.load_state_dict(state, strict=True)


def save_pretrained(model: CLIP, folder: str | Path) -> Path:
    """Write ``model`` (weights, config, tokenizer) into ``folder``; returns the folder."""
    if model.tokenizer is None:
        raise ValueError("a CLIP without a tokenizer cannot be saved as a model folder (it could not encode text)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(model.config),
        "tokenizer": model.tokenizer.settings(),
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    model.tokenizer.save(folder)
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CLIP model folder {folder} does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a CLIP model folder: it has no {CONFIG_FILE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return meta


def from_pretrained(folder: str | Path, device: torch.device | str = "cpu") -> CLIP:
    """Load a folder written by :func:`save_pretrained`, strictly."""
    folder = Path(folder)
    meta = read_config(folder)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG_FILE}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: unknown format_version {meta.get('format_version')!r}; "
            f"this version of unclip reads version {FORMAT_VERSION}"
        )
    unknown = sorted(set(meta) - {"format", "format_version", "config", "tokenizer"})
    if unknown:
        raise CheckpointError(f"{folder / CONFIG_FILE}: unknown key(s) {', '.join(unknown)}")
    config = config_from_dict(CLIPConfig, meta.get("config"), "config")
    tokenizer = Tokenizer.load(folder, meta.get("tokenizer") or {})
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    model = CLIP(config, tokenizer)
    load_weights(model, load_file(str(weights)), str(weights))
    return model.to(device).eval()


def load_clip(folder: str | Path, device: torch.device | str = "cpu") -> CLIP:
    """Any CLIP folder: ours (``save_pretrained``) or a Hugging Face ``transformers`` CLIP (see ``unclip.clip.hf``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CLIP model folder {folder} does not exist")
    if (folder / CONFIG_FILE).is_file() and read_config(folder).get("format") == FORMAT:
        return from_pretrained(folder, device)
    from unclip.clip import hf

    if hf.is_hf_clip(folder):
        return hf.load_hf_clip(folder, device=device)
    raise CheckpointError(
        f"{folder} is not a CLIP checkpoint: expected an unclip CLIP folder (config.json with format {FORMAT!r}) "
        "or a transformers CLIP folder (config.json with model_type 'clip', or text_encoder/ + image_encoder/)"
    )
