"""Decoder and upsampler model folders: ``config.json`` (format, version, kind, typed config) + weights.

Built on ``unclip.model_folder``: strict loading (unknown format, version, kind or config keys, missing or
unexpected tensors, shape mismatches are errors that say what is wrong) and atomic writes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor, nn

from unclip.model_folder import (
    CheckpointError,
    config_from_dict,
    load_weights,
    read_meta,
    read_weights,
    write_model_folder,
)
from unclip.models.decoder import Decoder, DecoderConfig
from unclip.models.upsampler import Upsampler, UpsamplerConfig

FORMAT = "unclip-image-model"
FORMAT_VERSION = 1
KINDS: dict[str, tuple[type, type]] = {"decoder": (DecoderConfig, Decoder), "upsampler": (UpsamplerConfig, Upsampler)}


def save_pretrained(model: Decoder | Upsampler, folder: str | Path, half: bool = False) -> Path:
    """Write a decoder or upsampler into ``folder`` atomically (``half``: float16 parameters)."""
    kind = next((k for k, (_, cls) in KINDS.items() if isinstance(model, cls)), None)
    if kind is None:
        raise ValueError(f"not a decoder or upsampler: {type(model).__name__}")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": dataclasses.asdict(model.config),
    }
    return write_model_folder(folder, meta, model, half=half)


def from_pretrained(folder: str | Path, kind: str | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """Load a decoder or upsampler folder strictly, in eval mode; ``kind`` (if given) must match the folder."""
    folder = Path(folder)
    meta = read_meta(folder, FORMAT, FORMAT_VERSION, {"kind", "config"}, "decoder/upsampler")
    found = meta.get("kind")
    if found not in KINDS:
        raise CheckpointError(f"{folder}/config.json: unknown kind {found!r}; expected one of {', '.join(KINDS)}")
    if kind is not None and found != kind:
        raise CheckpointError(f"{folder} holds a {found}, not a {kind}")
    config_cls, net_cls = KINDS[found]
    model = net_cls(config_from_dict(config_cls, meta.get("config"), f"{folder}/config.json: config"))
    load_weights(model, read_weights(folder), str(folder / "model.safetensors"))
    return model.to(device).eval()


def load_image_model_weights(model: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """Strictly load a training checkpoint's weights (e.g. its EMA) into a decoder or upsampler."""
    load_weights(model, state, where)
