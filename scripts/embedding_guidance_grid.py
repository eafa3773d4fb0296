"""A picture of embedding guidance: held-out scenes reconstructed from their z_i at several guidance settings.

    python scripts/embedding_guidance_grid.py --model MODEL --n 8 --out docs/results/embedding_guidance_grid.png \
        --arm x0:1 --arm denoiser:300 --arm denoiser:1000

Rows are the first held-out scenes of ``unclip eval decoder`` (the same scenes and seeds); columns: the source at
the decoder's resolution, the decode without embedding guidance, then one decode per ``--arm GRADIENT:SCALE``
(``decoder_embedding_guidance_gradient`` and ``decoder_embedding_guidance``). Each label gives the judge's verdict
(scene graph kept or not) and the CLIP cosine to the source's z_i.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from PIL import Image

from unclip.atomic import atomic_file
from unclip.diffusion import generators_from_seeds
from unclip.eval.generation import held_out_images, reconstruction_scores
from unclip.pipeline import UnCLIPPipeline, to_pil
from unclip.pipeline.outputs import contact_sheet


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a model folder")
    p.add_argument("--n", type=int, default=8, help="held-out scenes (rows)")
    p.add_argument("--arm", action="append", default=[], metavar="GRADIENT:SCALE", help="a guided column (repeatable)")
    p.add_argument("--cell", type=int, default=112, help="pixels per image in the figure")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args()
    arms = [(g, float(s)) for g, s in (a.split(":") for a in args.arm)]
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    real, scenes = held_out_images(None, args.n, pipe.decoder.config.resolution)
    with torch.no_grad():
        z_i = pipe.clip.encode_image(real)
    columns = [("source", real)]
    for gradient, scale in [("x0", 0.0), *arms]:
        s = dataclasses.replace(
            pipe.settings, decoder_embedding_guidance=scale, decoder_embedding_guidance_gradient=gradient
        )
        with torch.no_grad():
            decoded = pipe.decode(z_i, generators_from_seeds(range(args.n)), s=s)  # the evaluation's seeds
        name = f"{'den' if gradient == 'denoiser' else gradient} {scale:g}" if scale else "unguided"
        columns.append((name, decoded.float().clamp(-1, 1)))
    scores = {}
    for name, batch in columns:
        with torch.no_grad():
            scores[name] = reconstruction_scores(pipe, batch, z_i, scenes)
    images, labels = [], []
    for row in range(args.n):
        for name, batch in columns:
            similarity, verdicts = scores[name]
            kept = all(verdicts[row].values())
            images.append(to_pil(batch[row : row + 1])[0].resize((args.cell, args.cell), Image.NEAREST))
            labels.append(f"{name} {'ok' if kept else 'x'} {similarity[row]:.2f}")
    sheet = contact_sheet(images, labels, columns=len(columns))
    with atomic_file(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
