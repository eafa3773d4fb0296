"""A picture of Fig. 7 of the paper: held-out images decoded from their z_i rebuilt from the top k principal components.

    python scripts/probing_grid.py --model MODEL --n 4 --dims 1,2,4,8,16,32,all --out docs/results/probing_grid.png

Rows are held-out Shapes-world test scenes (the source image last), columns the numbers of components; every
image of a row is decoded with one seed (``unclip.pipeline.probe``), so a row changes by z_i alone. The PCA is the
model's cached fit (``unclip probe``'s defaults: 5,000 training images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from unclip.atomic import atomic_file
from unclip.data.shapes.batch import render_batch
from unclip.pipeline import UnCLIPPipeline, embedding_pca, probe, to_pil
from unclip.pipeline.probing import parse_dims


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a model folder")
    p.add_argument("--n", type=int, default=4, help="held-out scenes (rows)")
    p.add_argument("--dims", default="1,2,4,8,16,32,all")
    p.add_argument("--cell", type=int, default=96, help="pixels per image in the figure")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args()
    dims = parse_dims(args.dims)
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    pca = embedding_pca(pipe, args.model, progress=True)
    samples, sources = render_batch(args.n, max(pipe.resolution, int(pipe.clip.image_size)))
    label_h, pad, cell = 16, 2, args.cell
    out = Image.new("RGB", ((len(dims) + 1) * (cell + pad), label_h + args.n * (cell + pad)), "white")
    draw = ImageDraw.Draw(out)
    for c, k in enumerate([*dims, "source"]):
        text = "z_i" if k is None else (k if k == "source" else f"{k} ({pca.cumulative(k):.0%})")
        draw.text((c * (cell + pad) + 4, 2), str(text), fill="black")
    for r in range(args.n):
        row = [*to_pil(probe(pipe, sources[r], dims, pca, seed=r)), to_pil(sources[r : r + 1])[0]]
        for c, im in enumerate(row):
            out.paste(im.resize((cell, cell), Image.NEAREST), (c * (cell + pad), label_h + r * (cell + pad)))
        print(f"row {r + 1}/{args.n}: {samples[r].caption}")
    path = Path(args.out)
    with atomic_file(path) as tmp:  # all or nothing
        out.save(tmp, format="PNG")
    print(f"wrote {args.out} ({out.size[0]}×{out.size[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
