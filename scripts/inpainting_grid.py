"""A picture of inpainting edits: held-out scenes with one object masked and recoloured by the caption.

    python scripts/inpainting_grid.py --model MODEL --n 6 --out docs/results/inpainting_grid.png

Rows are the first cases of ``unclip eval inpainting`` (two objects, the second masked, a new colour named in the
caption, printed per row); columns: the source, the masked source, the edit by plain replacement
(``inpaint_resample=1``), the edit by RePaint (the model's settings, z_i from the prior) with two seeds, the edit
by RePaint from the image's own z_i turned toward the new caption (``--from``, §3.3), and text to image from the
same caption. Seed 0 wherever one seed is shown.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from PIL import Image, ImageDraw

from unclip.atomic import atomic_file
from unclip.eval.inpainting import edit_cases
from unclip.pipeline import UnCLIPPipeline, to_pil
from unclip.pipeline.inpainting import inpaint_batch, text_diff_embeddings

COLUMNS = ("source", "masked", "replacement", "RePaint", "RePaint, seed 1", "text diff", "text to image")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a model folder")
    p.add_argument("--n", type=int, default=6, help="held-out scenes (rows)")
    p.add_argument("--cell", type=int, default=96, help="pixels per image in the figure")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args()
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    cases = edit_cases(args.n, pipe.resolution)
    repaint = pipe.settings
    label_h, pad, cell = 16, 2, args.cell
    out = Image.new("RGB", (len(COLUMNS) * (cell + pad), label_h + args.n * (cell + pad)), "white")
    draw = ImageDraw.Draw(out)
    for c, name in enumerate(COLUMNS):
        draw.text((c * (cell + pad) + 4, 2), name, fill="black")
    for r, case in enumerate(cases):
        image, fill, caption = case["image"][None], case["fill"][None], [case["caption"]]
        pipe.settings = dataclasses.replace(repaint, inpaint_resample=1)
        plain = inpaint_batch(pipe, image, fill, caption, [0])
        pipe.settings = repaint
        edits = inpaint_batch(pipe, image.expand(2, -1, -1, -1), fill.expand(2, -1, -1, -1), caption * 2, [0, 1])
        z_i = text_diff_embeddings(pipe, image, [case["source_caption"]], caption)
        turned = inpaint_batch(pipe, image, fill, caption, [0], z_i=z_i)
        generated = pipe(caption, seed=0).tensors
        row = [*to_pil(image), *to_pil(image * (1 - fill)), *to_pil(plain), *to_pil(edits), *to_pil(turned)]
        row += to_pil(generated)
        for c, im in enumerate(row):
            out.paste(im.resize((cell, cell), Image.NEAREST), (c * (cell + pad), label_h + r * (cell + pad)))
        print(f"row {r + 1}/{args.n}: {case['caption']}")
    with atomic_file(Path(args.out)) as tmp:  # all or nothing
        out.save(tmp, format="PNG")
    print(f"wrote {args.out} ({out.size[0]}×{out.size[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
