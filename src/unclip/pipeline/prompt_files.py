"""Many prompts in, a folder of images out: a prompt file, generated in batches, resumable after any stop.

Two layouts:

* ``flat``: ``KEY_000.png`` + ``KEY_000.json`` per image. The sidecar carries the prompt file's row (so the
  suite from ``unclip data prompts`` keeps its scene-graph requirement and ``unclip judge OUT`` scores the folder),
  the seed, the model and the sampling settings.
* ``geneval``: GenEval's layout (Ghosh et al., 2023), ``00000/metadata.jsonl`` (the prompt's row as one JSON
  object) and ``00000/samples/0000.png``, so GenEval's own ``evaluate_images.py`` reads the folder unchanged; the
  seed and settings go to ``samples/0000.json`` beside each image, which GenEval skips (it reads ``\\d+.png``).

Every image is written on its own (atomically), so a stopped run keeps what it made and a rerun of the same
command makes only what is missing. ``generation.json`` records what the folder was made with; a rerun with other
settings, seed, images per prompt or layout is refused rather than mixed in.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from unclip.atomic import atomic_file, atomic_write_text
from unclip.data.shapes.export import CONTACT_SHEET
from unclip.pipeline.outputs import contact_sheet
from unclip.pipeline.sharding import Shard

LAYOUTS = ("flat", "geneval")
PROMPT_FIELDS = ("prompt", "text", "caption")  # the first present names a JSONL row's prompt
RUN_FILE = "generation.json"
SHEET_PROMPTS = 16  # the contact sheet shows the images of the first prompts only
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class PromptRow:
    prompt: str
    key: str  # names the row's images in the flat layout
    record: dict[str, Any]  # the row as read: a JSONL object, or {"prompt": line} for a text file


def read_prompt_file(path: str | Path) -> list[PromptRow]:
    """The prompts of a ``.txt`` file (one a line; blank lines skipped) or a ``.jsonl`` file (one object a line with
    ``prompt``, ``text`` or ``caption``, and optionally ``key``; GenEval's ``evaluation_metadata.jsonl`` works).

    Rows without a key are named by their position, ``p00000``, ``p00001``…
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt file")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise ValueError(f"{path}: expected a .txt file (one prompt a line) or a .jsonl file (one object a line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err
    rows: list[PromptRow] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        record = {"prompt": line.strip()} if suffix == ".txt" else _json_row(line, where)
        field = next((f for f in PROMPT_FIELDS if f in record), None)
        if field is None or not isinstance(record[field], str):
            raise ValueError(f"{where}: needs a string under one of {', '.join(PROMPT_FIELDS)}")
        key = record.get("key", f"p{len(rows):05d}")
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"{where}: key {key!r} cannot name a file (letters, digits, '.', '_', '-'; 128 at most)")
        rows.append(PromptRow(record[field], key, record))
    if not rows:
        raise ValueError(f"{path}: holds no prompts")
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row.key in seen:
            raise ValueError(f"{path}: key {row.key!r} names prompts {seen[row.key]} and {i} (counting from 0)")
        seen[row.key] = i
    return rows


def _json_row(line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON ({err.msg})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def image_path(out: Path, layout: str, index: int, row: PromptRow, k: int) -> Path:
    """Where image ``k`` of prompt ``index`` goes; its sidecar is the same path with ``.json``."""
    if layout == "geneval":
        return out / f"{index:05d}" / "samples" / f"{k:04d}.png"
    return out / f"{row.key}_{k:03d}.png"


def generate_from_prompts(
    pipe, rows: list[PromptRow], out: str | Path, *, images_per_prompt: int = 4, seed: int = 0, batch_size: int = 8,
    layout: str = "flat", model: str | None = None, progress: bool = True, shard: Shard | None = None, **overrides: Any,
) -> dict[str, Any]:  # fmt: skip
    """Generate ``images_per_prompt`` images for every row into ``out``; image k of prompt i has seed
    ``seed + i * images_per_prompt + k`` (what one ``pipe(prompts, num_images=…, seed=seed)`` call would give).

    Images already in ``out`` from an earlier run of the same settings are kept, not made again. With a ``shard``
    of a multi-process run, this process makes its share of the missing images (see :mod:`.sharding`). Returns the
    run's counts, over all processes: ``{"images", "generated", "kept", "out"}``.
    """
    from tqdm.auto import tqdm

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    for name, value in (("images_per_prompt", images_per_prompt), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not rows:
        raise ValueError("no prompts given")
    out, shard = Path(out), shard or Shard()
    settings = dataclasses.asdict(dataclasses.replace(pipe.settings, **overrides))
    run = {"model": model, "seed": seed, "images_per_prompt": images_per_prompt, "layout": layout,
           "settings": settings}  # fmt: skip
    run = json.loads(json.dumps(run))  # as generation.json will hold it (tuples become lists) for the comparison

    def claim() -> None:
        _claim_folder(out, run)
        if layout == "geneval":
            for i, row in enumerate(rows):
                _write_text(out / f"{i:05d}" / "metadata.jsonl", json.dumps(row.record) + "\n")

    shard.main_first(claim)
    if not shard.is_main:
        _claim_folder(out, run)  # checks the record the main process found or wrote
    jobs = [
        (i, row, k, seed + i * images_per_prompt + k) for i, row in enumerate(rows) for k in range(images_per_prompt)
    ]
    todo = [job for job in jobs if not _already_made(image_path(out, layout, *job[:3]), job[1].prompt, job[3])]
    shard.barrier()  # every process has listed what is missing before any writes, so all split the same list
    mine = shard.take(todo)
    where = "" if shard.world_size == 1 else f" (process {shard.rank + 1} of {shard.world_size})"
    with tqdm(
        total=len(jobs) - len(todo) + len(mine), initial=len(jobs) - len(todo), desc=f"generate{where}", unit="image",
        disable=not (progress and shard.is_main),
    ) as bar:  # fmt: skip
        for start in range(0, len(mine), batch_size):
            part = mine[start : start + batch_size]
            result = pipe([row.prompt for _, row, _, _ in part], seed=[s for *_, s in part], **overrides)
            for (i, row, k, s), image in zip(part, result.images, strict=True):
                extra = {} if layout == "geneval" else {f: v for f, v in row.record.items() if f not in PROMPT_FIELDS}
                sidecar = {**extra, "prompt": row.prompt, "key": row.key, "index": k, "seed": s, "model": model,
                           "settings": result.settings}  # fmt: skip
                _write_image(image_path(out, layout, i, row, k), image, sidecar)
            bar.update(len(part))
    shard.barrier()  # the contact sheet needs every process's images
    if shard.is_main:
        _write_sheet(out, layout, rows, images_per_prompt)
    return {"images": len(jobs), "generated": len(todo), "kept": len(jobs) - len(todo), "out": str(out)}


def _claim_folder(out: Path, run: dict[str, Any]) -> None:
    """Start ``out`` (absent or empty), or go on with it when it was made with the same ``run``; else refuse."""
    record = out / RUN_FILE
    if record.is_file():
        try:
            earlier = json.loads(record.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{record}: malformed ({err.msg}); remove the folder or choose another --out") from err
        differ = [k for k in run if k != "settings" and earlier.get(k) != run[k]]
        before = earlier.get("settings") if isinstance(earlier.get("settings"), dict) else {}
        differ += [f"settings.{f}" for f in run["settings"] if before.get(f) != run["settings"][f]]
        if differ:
            raise ValueError(
                f"{out} holds images made with other {', '.join(differ)}; rerun with the same ones to go on, or choose "
                "another --out"
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not a prompt-file run of unclip; choose an empty or new --out")
    _write_text(record, json.dumps(run, indent=2) + "\n")


def _already_made(png: Path, prompt: str, seed: int) -> bool:
    """An image counts as made when its PNG and sidecar both exist; a sidecar of another prompt or seed means the
    prompt file changed under the folder, which is refused rather than mixed."""
    sidecar = png.with_suffix(".json")
    if not (png.is_file() and sidecar.is_file()):
        return False
    try:
        made = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False  # a sidecar cut short: make the image again
    if made.get("prompt") != prompt or made.get("seed") != seed:
        raise ValueError(
            f"{png} was made from prompt {made.get('prompt')!r} with seed {made.get('seed')}, not {prompt!r} with "
            f"seed {seed}: the prompt file changed since; choose another --out"
        )
    return True


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _write_image(png: Path, image: Image.Image, sidecar: dict[str, Any]) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(png) as tmp:
        image.save(tmp, format="PNG")
    _write_text(png.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")  # last: it marks the image done


def _write_sheet(out: Path, layout: str, rows: list[PromptRow], n: int) -> None:
    """``contact_sheet.png``: a row per prompt (the first SHEET_PROMPTS), labelled with the prompt's key."""
    images, labels = [], []
    for i, row in enumerate(rows[:SHEET_PROMPTS]):
        for k in range(n):
            with Image.open(image_path(out, layout, i, row, k)) as im:
                images.append(im.convert("RGB"))
            labels.append(f"{row.key} #{k}")
    with atomic_file(out / CONTACT_SHEET) as tmp:
        contact_sheet(images, labels, columns=min(n, 8)).save(tmp, format="PNG")
