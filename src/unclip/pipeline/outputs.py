"""Writing results: one PNG and one JSON sidecar per image, and a contact sheet, all or nothing.

Everything is written into a temporary folder beside the destination and moved into place at the end, so a
failure (a bad input discovered late, Ctrl-C) never leaves a half-written result folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from unclip.atomic import atomic_directory, refuse_to_replace
from unclip.data.shapes.export import CONTACT_SHEET


def contact_sheet(
    images: Sequence[Image.Image], labels: Sequence[str], columns: int = 4, label_height: int = 14
) -> Image.Image:
    """A grid of the images, each with its label underneath (cut to fit the cell)."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    w, h = images[0].size
    cell_w = max(w, 64)
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * (h + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (im, label) in enumerate(zip(images, labels, strict=True)):
        x, y = (k % columns) * cell_w, (k // columns) * (h + label_height)
        sheet.paste(im.resize((w, h)), (x + (cell_w - w) // 2, y))
        text = (
            label
            if draw.textlength(label) <= cell_w - 2
            else label[: max(1, int(len(label) * (cell_w - 2) / draw.textlength(label)) - 1)] + "…"
        )
        draw.text((x + 1, y + h + 1), text, fill="black")
    return sheet


def is_results_folder(folder: Path) -> bool:
    """An earlier :func:`write_results` folder: a contact sheet beside nothing but PNG and JSON files."""
    entries = list(folder.iterdir())
    plain = all(p.is_file() and p.suffix in (".png", ".json") for p in entries)
    return plain and any(p.name == CONTACT_SHEET for p in entries)


def check_results_folder(out: str | Path) -> None:
    """Refuse an ``out`` whose replacement would delete anything but earlier results (before any work)."""
    refuse_to_replace(out, is_results_folder, "results folder")


def write_results(
    out: str | Path, images: Sequence[Image.Image], records: Sequence[dict[str, Any]], labels: Sequence[str],
    *, stem: str = "image",
) -> Path:  # fmt: skip
    """``out/{stem}_{k:03d}.png`` + ``.json`` per image and ``out/contact_sheet.png``, moved into place at once.

    An existing ``out`` is replaced only after the new results are complete, and only when it is an earlier
    results folder (or empty): any other folder or file there is refused (:func:`check_results_folder`).
    """
    out = Path(out)
    if len(images) != len(records) or len(images) != len(labels):
        raise ValueError(f"{len(images)} images, {len(records)} records and {len(labels)} labels must match")
    check_results_folder(out)
    with atomic_directory(out) as tmp:
        for k, (im, rec) in enumerate(zip(images, records, strict=True)):
            im.save(tmp / f"{stem}_{k:03d}.png")
            (tmp / f"{stem}_{k:03d}.json").write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
        contact_sheet(images, labels).save(tmp / CONTACT_SHEET)
    return out
