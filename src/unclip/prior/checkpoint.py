"""Self-describing prior folders: ``config.json`` (format, version, kind, typed config) + ``model.safetensors``.

Everything the prior needs to run is in the weights file, including the embedding normalization (diffusion
prior) and the PCA basis, bucket edges and z_i . z_t quantiles (AR prior): they are module buffers. Loading is
strict (DESIGN.md §2): an unknown format, version or kind, unknown config keys, missing or unexpected tensors and
shape mismatches each raise :class:`CheckpointError` saying what is wrong. Nothing is pickled.

The strict key/shape check mirrors ``unclip.train.checkpoint.check_state_dict``; it is restated here because
the priors (layer 3) must not import the training engine (layer 5). Moving it down to one shared module is the
better fix (see the closing note of issue 6).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unclip.prior.ar_prior import ARPrior, ARPriorConfig
from unclip.prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig

FORMAT = "unclip-prior"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
KINDS: dict[str, tuple[type, type]] = {
    "diffusion": (DiffusionPriorConfig, DiffusionPrior),
    "ar": (ARPriorConfig, ARPrior),
}


class CheckpointError(ValueError):
    """A prior folder or weight file that cannot be loaded, with the reason."""


def _kind_of(model: nn.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise ValueError(f"not a prior network: {type(model).__name__} (expected DiffusionPrior or ARPrior)")


def _few(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def check_state_dict(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    own = module.state_dict()
    problems = []
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing:
        problems.append(f"missing tensor(s) {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {_few(unexpected)}")
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"shape mismatch {_few(shapes)}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def config_from_dict(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise CheckpointError(f"{where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise CheckpointError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}"
        )
    try:
        return cls(**d)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: {err}") from err


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Write a prior (either kind) into ``folder``; returns the folder."""
    kind = _kind_of(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": dataclasses.asdict(model.config),  # type: ignore[call-overload]
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def from_pretrained(folder: str | Path, device: torch.device | str = "cpu") -> DiffusionPrior | ARPrior:
    """Load a folder written by :func:`save_pretrained`, strictly, in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prior folder {str(folder)!r} does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a prior folder: it has no {CONFIG_FILE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unknown format_version {meta.get('format_version')!r}; this unclip reads version {FORMAT_VERSION}"
        )
    unknown = sorted(set(meta) - {"format", "format_version", "kind", "config"})
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) {', '.join(unknown)}")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown prior kind {kind!r}; expected one of {', '.join(KINDS)}")
    config_cls, net_cls = KINDS[kind]
    config = config_from_dict(config_cls, meta.get("config"), f"{path}: config")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{weights} is not a readable safetensors file: {err}") from err
    model = net_cls(config)
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_prior_weights(model: nn.Module, state: dict[str, Tensor], where: str = "prior weights") -> None:
    """Strictly load a state dict (e.g. a training checkpoint's EMA weights) into a prior."""
    check_state_dict(model, state, where)
    model.load_state_dict(state, strict=True)
