"""All-or-nothing folders: assembled beside their destination, then swapped into place.

Checkpoints, model folders, generated results and the demo gallery are folders of several files; a crash or
Ctrl-C half-way must leave either the previous folder or the new one, never a mixture.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def refuse_to_replace(dest: str | Path, earlier: Callable[[Path], bool], what: str) -> None:
    """Refuse a ``dest`` that :func:`atomic_directory` would destroy without it being an earlier output.

    Replacing a folder deletes everything in it, so ``dest`` must be absent, an empty folder, or a folder that
    ``earlier`` accepts as an earlier ``what`` (replaced then); a file, a device or any other folder is refused.
    """
    dest = Path(dest)
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ValueError(f"{str(dest)!r} exists and is not a folder; choose a new or empty folder for the {what}")
    if any(dest.iterdir()) and not earlier(dest):
        raise ValueError(
            f"{str(dest)!r} is a folder that holds other files; the {what} would replace it whole, so choose a new "
            f"or empty folder (an earlier {what} there is replaced)"
        )


@contextmanager
def atomic_directory(dest: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; on success it replaces ``dest``, on failure it is removed.

    An existing ``dest`` is moved aside before the new folder is renamed in, and deleted only afterwards.
    The temporary folder is named ``.{dest.name}.tmp-*`` so stale ones can be recognised and cleaned up.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    except OSError as err:  # unwritable, or a parent is a file: name the destination, not the temporary folder
        why = (
            f"{err.filename!r} is not a folder"
            if isinstance(err, (FileExistsError, NotADirectoryError))
            else err.strerror
        )
        raise type(err)(err.errno, f"cannot create {str(dest)!r} ({why})") from err
    old = None
    try:
        yield tmp
        # mkdtemp makes the folder private (0700) and some writers (safetensors) make private files (0600): give
        # the result the permissions of a folder made the ordinary way, so a shared model folder stays readable.
        _apply_umask(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest.exists():
            os.replace(old, dest)  # the swap itself failed: put the previous folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _apply_umask(root: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        base = 0o777 if path.is_dir() or os.access(path, os.X_OK) else 0o666
        path.chmod(base & ~umask)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a hidden sibling of ``path`` to write; on success it is renamed over ``path``, on failure removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write one file all or nothing: into a hidden sibling first, then renamed over ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
