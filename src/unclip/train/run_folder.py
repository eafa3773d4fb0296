"""The run folder's life at the edges of a run: checked and started before any work, taken back when a new run
fails before its first step (the engine's ``train``)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from unclip.atomic import atomic_write_text
from unclip.train.config import RunConfig, incompatibilities


def prepare_run_dir(run: RunConfig, run_dir: Path, resume: bool) -> None:
    """Check the run folder against the request (one clear error, before any work) and write config.json."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if config_path.exists():
        if not resume:
            raise ValueError(f"run folder {str(run_dir)!r} already holds a run; pass --resume or choose another --out")
        saved = RunConfig.from_json(json.loads(config_path.read_text(encoding="utf-8")))
        problems = incompatibilities(saved, run)
        if problems:
            raise ValueError(f"cannot resume {str(run_dir)!r} with a different configuration: " + "; ".join(problems))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, run.dumps() + "\n")


def folder_entries(folder: Path) -> set[str] | None:
    """The names directly in ``folder``; None when it does not exist."""
    return {p.name for p in folder.iterdir()} if folder.is_dir() else None


def remove_new_entries(folder: Path, before: set[str] | None) -> None:
    """Remove what ``folder`` gained since :func:`folder_entries` returned ``before``, and the folder itself if it
    did not exist then and is empty now. Best effort: a file that cannot be removed stays (the run's own error is
    the one to report)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if before is None or p.name not in before:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    if before is None:
        with contextlib.suppress(OSError):  # something else wrote into it meanwhile: leave it
            folder.rmdir()
