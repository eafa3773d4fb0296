"""Atomic, verified, self-describing training checkpoints (DESIGN.md §2 "Checkpoints are self-describing").

A checkpoint is a folder ``RUN/checkpoints/step_00001234/`` holding one safetensors file per group of tensors
(``model``, ``ema``, ``optimizer``, ``rng``...), ``state.json`` (step, config, counters, everything that is not
a tensor) and ``manifest.json`` (format version and the SHA-256 of every other file). It is written into a
temporary folder, flushed to disk and renamed into place, so a crash leaves either the whole checkpoint or an
ignorable temporary folder. Loading re-hashes every file: a truncated or altered checkpoint is reported and the
previous one is used. Nothing is pickled: RNG states are stored as uint8 tensors or JSON numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from unclip.atomic import atomic_directory

# One error type and one strict loader serve model folders and training checkpoints alike.
from unclip.model_folder import CheckpointError

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    tensors: dict[str, dict[str, Tensor]]
    state: dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def save_checkpoint(
    root: Path, step: int, tensors: dict[str, dict[str, Tensor]], state: dict[str, Any], keep_last: int = 3
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically, then delete all but the newest ``keep_last``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    # Re-saving a step (the final save right after a periodic one) swaps the old copy out only at the end.
    with atomic_directory(final) as tmp:
        digests = {}
        for group, tdict in tensors.items():
            # Clones drop storage sharing (tied weights), which safetensors refuses to write.
            flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tdict.items()}
            path = tmp / f"{group}.safetensors"
            save_file(flat, str(path))
            _fsync(path)
            digests[path.name] = _sha256(path)
        path = tmp / "state.json"
        path.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
        _fsync(path)
        digests[path.name] = _sha256(path)
        manifest = {"format_version": FORMAT_VERSION, "step": step, "sha256": digests}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        _fsync(tmp / "manifest.json")
    _fsync(root)
    prune(root, keep_last)
    return final


def prune(root: Path, keep_last: int) -> None:
    """Delete stale temporary folders and all but the newest ``keep_last`` checkpoints."""
    for pattern in (".step_*.tmp-*", ".step_*.old-*"):  # leftovers of a save killed half-way (unclip.atomic)
        for p in Path(root).glob(pattern):
            shutil.rmtree(p, ignore_errors=True)
    for _, p in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint folder; any problem raises :class:`CheckpointError` saying which."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable manifest.json ({err})") from err
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this code reads {FORMAT_VERSION}")
    digests = manifest.get("sha256", {})
    if "state.json" not in digests:
        raise CheckpointError(f"{path}: manifest lists no state.json")
    for name, expected in digests.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        actual = _sha256(file)
        if actual != expected:
            raise CheckpointError(f"{path}: {name} is corrupt (SHA-256 {actual[:12]}…, manifest {expected[:12]}…)")
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    tensors = {name[: -len(".safetensors")]: load_file(str(path / name)) for name in digests if name != "state.json"}
    return Checkpoint(path, int(manifest["step"]), tensors, state)


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies; broken ones are reported (warnings) and passed over."""
    for step, path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint at step {step}: {err}", stacklevel=2)
    return None


# Optimizer state dicts hold tensors and plain numbers; split them into a safetensors group and JSON.
def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    per: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, name = flat.split(".", 1)
        per.setdefault(int(idx), {})[name] = value
    return {"state": per, "param_groups": meta["param_groups"]}


def rng_state_tensors(rank: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """This process's RNG states: torch's as uint8 tensors, Python's and NumPy's as JSON numbers."""
    import random

    import numpy as np

    tensors = {f"rank{rank}.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rank{rank}.cuda{i}"] = s
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any], rank: int) -> None:
    import random

    import numpy as np

    torch.set_rng_state(tensors[f"rank{rank}.torch"])
    if torch.cuda.is_available():
        prefix = f"rank{rank}.cuda"
        keys = sorted((k for k in tensors if k.startswith(prefix)), key=lambda k: int(k[len(prefix) :]))
        states = [tensors[k] for k in keys]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, keys, gauss = meta["python"]
    random.setstate((v, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
