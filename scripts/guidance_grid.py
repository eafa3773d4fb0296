"""A picture of Fig. 10–11 of the paper: samples of one prompt as decoder guidance grows, one block per model.

    python scripts/guidance_grid.py --model unclip=MODEL_A --model glide_like=MODEL_B \
        --prompt "two red circles" --scales 1,3,8 --seeds 4 --out docs/results/guidance_grid.png

Rows are (model, guidance scale), columns are seeds; the same seeds in every row, so a column shows what guidance
does to one sample. Guidance is the single scale over the whole condition (both decoder scales at once), images at
the decoder's resolution (upsamplers skipped), enlarged with nearest-neighbour so pixels stay visible.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from PIL import Image, ImageDraw

from unclip.atomic import atomic_file
from unclip.pipeline import UnCLIPPipeline


def grid(models: dict[str, UnCLIPPipeline], prompt: str, scales: list[float], seeds: int, cell: int) -> Image.Image:
    label_w, pad = 150, 2
    rows = [(name, s) for name in models for s in scales]
    out = Image.new("RGB", (label_w + seeds * (cell + pad), len(rows) * (cell + pad) + 20), "white")
    draw = ImageDraw.Draw(out)
    draw.text((4, 4), f'"{prompt}"', fill="black")
    for r, (name, scale) in enumerate(rows):
        pipe = copy.copy(models[name])
        pipe.upsamplers = []
        images = pipe([prompt] * seeds, seed=list(range(seeds)), decoder_guidance_image=scale,
                      decoder_guidance_text=scale).images  # fmt: skip
        y = 20 + r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), f"{name}  s={scale:g}", fill="black")
        for c, im in enumerate(images):
            out.paste(im.resize((cell, cell), Image.NEAREST), (label_w + c * (cell + pad), y))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model folder (repeatable)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--scales", default="1,3,8", help="decoder guidance scales, comma-separated")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--cell", type=int, default=96, help="pixels per image in the figure")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args()
    models = {}
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep:
            p.error(f"--model {spec!r}: expected NAME=DIR")
        models[name] = UnCLIPPipeline.from_pretrained(folder)
    scales = [float(s) for s in args.scales.split(",")]
    image = grid(models, args.prompt, scales, args.seeds, args.cell)
    out = Path(args.out)
    with atomic_file(out) as tmp:  # all or nothing
        image.save(tmp, format="PNG")
    print(f"wrote {args.out} ({image.size[0]}×{image.size[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
