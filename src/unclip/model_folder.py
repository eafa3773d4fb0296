"""Self-describing model folders, shared by every kind of model (DESIGN.md §2, "Checkpoints").

A folder holds ``config.json`` (a format name and version plus the typed config) and ``model.safetensors``
(weights; nothing pickled), and whatever else the model needs to run (a tokenizer). Loading is strict: an
unknown format or version, unknown config keys, missing or unexpected weights and shape mismatches are errors
that say what is wrong. Writing is atomic: the folder is assembled beside its destination and moved into place,
so an interrupted save never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unclip.atomic import atomic_directory, refuse_to_replace

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
T = TypeVar("T")


class CheckpointError(ValueError):
    """A model folder or weight file that cannot be loaded, with the reason."""


def _is_tuple(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(a) for a in typing.get_args(hint))
    return False


def _dataclass_in(hint: Any) -> type | None:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object"}


def _type_problem(hint: Any, v: Any) -> str | None:
    """What ``v`` should be when it does not fit the type hint ``hint``; None when it fits (or the hint is not one
    checked here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(a, v) for a in args]
        return None if None in problems else " or ".join(p for p in problems if p)
    if hint is type(None):
        return None if v is None else "null"
    if origin is typing.Literal:
        return None if v in args else "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list):
        if isinstance(v, str) and set(args) <= {str, Ellipsis}:
            return None  # "swap,relation" on the command line: the dataclass splits it (or refuses it) itself
        if not isinstance(v, (tuple, list)):
            return "a list"
        items = args[:1] * len(v) if len(args) == 2 and args[1] is Ellipsis else args
        if items and len(items) != len(v):
            return f"a list of {len(items)}"
        found = [_type_problem(a, x) for a, x in zip(items, v, strict=False)]
        return next((f"a list whose items are each {p}" for p in found if p), None)
    kind = origin or hint
    if kind not in _KINDS:
        return None
    if kind is not bool and isinstance(v, bool):
        return _KINDS[kind]
    ok = isinstance(v, (int, float)) if kind is float else isinstance(v, kind)
    return None if ok else _KINDS[kind]


def config_from_dict(cls: type[T], d: Any, where: str = "config", error: type[Exception] = CheckpointError) -> T:
    """Dataclass ``cls`` from JSON: nested dataclasses, lists back to tuples, unknown keys refused.

    The dataclass's own validation (``__post_init__``) runs, and its complaint is re-raised naming ``where``.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(d, dict):
        raise error(f"{where} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in d.items():
        hint = hints.get(k)
        nested = _dataclass_in(hint)
        if nested is not None and isinstance(v, dict):
            v = config_from_dict(nested, v, f"{where}.{k}", error)
        elif _is_tuple(hint) and isinstance(v, list):
            v = tuple(v)
        problem = None if hint is None else _type_problem(hint, v)  # nested dataclasses: checked by their own call
        if problem:  # a value of the wrong type must not reach the dataclass: its checks assume the type
            raise error(f"{where}.{k} must be {problem}, got {v!r}")
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, error):
            raise
        raise error(f"{where}: {err}") from err


def _few(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def check_state_dict(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """Raise :class:`CheckpointError` naming every missing or unexpected tensor and every shape mismatch."""
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
    # Damaged bytes or a diverged run: NaN weights would only ever give black images, so they are refused here.
    nan = [k for k, v in state.items() if v.is_floating_point() and bool(torch.isnan(v).any())]
    if nan:
        problems.append(f"NaN values in tensor(s) {_few(sorted(nan))} (a damaged file or a diverged training run)")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def load_weights(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """Load ``state`` into ``module`` strictly, after a check whose error names what does not fit."""
    check_state_dict(module, state, where)
    module.load_state_dict(state, strict=True)


def is_model_folder(folder: Path) -> bool:
    """An earlier model folder (config.json and weights; a run folder has no weights at the top), which a save
    may replace."""
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def write_model_folder(
    folder: str | Path,
    meta: dict[str, Any],
    module: nn.Module,
    extra: Callable[[Path], None] | None = None,
    half: bool = False,
) -> Path:
    """Write ``config.json`` (``meta``), ``model.safetensors`` (``module``'s state) and ``extra(tmp)``'s files
    into ``folder`` atomically: everything goes to a sibling temporary folder that then replaces ``folder``.

    ``half`` stores the floating-point parameters in float16 (half the size; loading casts them back to the
    model's dtype); buffers such as noise schedules keep their precision."""
    folder = Path(folder)
    refuse_to_replace(folder, is_model_folder, "model folder")
    with atomic_directory(folder) as tmp:
        state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
        if half:
            state.update(_half_parameters(module, state, folder))
        tags = {"format": str(meta.get("format")), "format_version": str(meta.get("format_version"))}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata=tags)
        if extra is not None:
            extra(tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def _half_parameters(module: nn.Module, state: dict[str, Tensor], folder: Path) -> dict[str, Tensor]:
    halves = {}
    for name, _ in module.named_parameters():
        if name in state and state[name].is_floating_point():
            half = state[name].to(torch.float16)
            if not torch.isfinite(half).all():
                raise ValueError(f"{folder}: parameter {name} does not fit float16 (|x| > 65504); save it in full")
            halves[name] = half
    return halves


def read_meta(
    folder: str | Path, fmt: str, version: int, keys: set[str], what: str, file: str = CONFIG_FILE
) -> dict[str, Any]:
    """``file`` (``config.json``) of a ``what`` folder, checked for format, version and unknown top-level keys."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist")
    path = folder / file
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a {what} folder: it has no {file}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path}: format is {meta.get('format')!r}, expected {fmt!r}")
    if meta.get("format_version") != version:
        raise CheckpointError(
            f"{path}: unknown format_version {meta.get('format_version')!r}; this unclip reads version {version}"
        )
    unknown = sorted(set(meta) - keys - {"format", "format_version"})
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) {', '.join(unknown)}")
    return meta


def read_weights(folder: str | Path) -> dict[str, Tensor]:
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
