"""Self-describing prior folders: ``config.json`` (format, version, kind, typed config) + ``model.safetensors``.

Everything the prior needs to run is in the weights file, including the embedding normalization (diffusion
prior) and the PCA basis, bucket edges and z_i . z_t quantiles (AR prior): they are module buffers. Loading is
strict and writing atomic (``unclip.model_folder``): an unknown format, version or kind, unknown config keys,
missing or unexpected tensors and shape mismatches each raise :class:`CheckpointError` saying what is wrong.
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
from unclip.prior.ar_prior import ARPrior, ARPriorConfig
from unclip.prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig

__all__ = ["CheckpointError", "from_pretrained", "load_prior_weights", "save_pretrained"]

FORMAT = "unclip-prior"
FORMAT_VERSION = 1
KINDS: dict[str, tuple[type, type]] = {
    "diffusion": (DiffusionPriorConfig, DiffusionPrior),
    "ar": (ARPriorConfig, ARPrior),
}


def _kind_of(model: nn.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise ValueError(f"not a prior network: {type(model).__name__} (expected DiffusionPrior or ARPrior)")


def save_pretrained(model: nn.Module, folder: str | Path, half: bool = False) -> Path:
    """Write a prior (either kind) into ``folder`` atomically; returns the folder (``half``: float16 parameters)."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": _kind_of(model),
        "config": dataclasses.asdict(model.config),  # type: ignore[call-overload]
    }
    return write_model_folder(folder, meta, model, half=half)


def from_pretrained(folder: str | Path, device: torch.device | str = "cpu") -> DiffusionPrior | ARPrior:
    """Load a folder written by :func:`save_pretrained`, strictly, in eval mode."""
    folder = Path(folder)
    meta = read_meta(folder, FORMAT, FORMAT_VERSION, {"kind", "config"}, "prior")
    path = folder / "config.json"
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown prior kind {kind!r}; expected one of {', '.join(KINDS)}")
    config_cls, net_cls = KINDS[kind]
    model = net_cls(config_from_dict(config_cls, meta.get("config"), f"{path}: config"))
    load_weights(model, read_weights(folder), str(folder / "model.safetensors"))
    return model.to(device).eval()


def load_prior_weights(model: nn.Module, state: dict[str, Tensor], where: str = "prior weights") -> None:
    """Strictly load a state dict (e.g. a training checkpoint's EMA weights) into a prior."""
    load_weights(model, state, where)
