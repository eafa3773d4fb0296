"""One labelled picture of a demo gallery (the README's): text to image, variations, an interpolation, a text diff,
an inpainting edit and probing.

python scripts/demo_sheet.py outputs/demo docs/bundle_demo.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from unclip.atomic import atomic_file

CELL, LABEL, PAD = 96, 140, 4


def rows(gallery: Path) -> list[tuple[str, list[Path]]]:
    def files(pattern: str) -> list[Path]:
        return sorted(gallery.glob(pattern))

    prompts = files("prompt_*.png")
    return [
        ("text to image", prompts[: len(prompts) // 2]),
        ("text to image", prompts[len(prompts) // 2 :]),
        ("variations (source first)", files("source_0.png") + files("variation_*.png")),
        ("interpolation", files("interpolation_*.png")),
        ("text diff", files("textdiff_*.png")),
        (
            "inpainting (src, mask)",
            files("inpaint_source.png") + files("inpaint_masked.png") + files("inpaint_[0-9].png"),
        ),
        ("probing: 1, 4, 16 PCs, z_i", files("probe_*.png")),
    ]


def main(gallery: str, out: str) -> None:
    table = [(name, paths) for name, paths in rows(Path(gallery)) if paths]
    if not table:
        raise SystemExit(f"{gallery} holds no demo gallery (run `unclip demo --out {gallery}` first)")
    width = LABEL + max(len(p) for _, p in table) * (CELL + PAD)
    sheet = Image.new("RGB", (width, len(table) * (CELL + PAD)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, paths) in enumerate(table):
        y = r * (CELL + PAD)
        draw.text((6, y + CELL // 2 - 6), name, fill="black")
        for c, path in enumerate(paths):
            sheet.paste(Image.open(path).convert("RGB").resize((CELL, CELL)), (LABEL + c * (CELL + PAD), y))
    with atomic_file(out) as tmp:  # all or nothing
        sheet.save(tmp, format="PNG")
    scores = Path(gallery) / "scores.json"
    if scores.is_file():
        print(json.loads(scores.read_text()).get("scores"))
    print(f"wrote {out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
