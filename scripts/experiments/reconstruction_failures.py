"""What a decoder gets wrong when it reconstructs held-out scenes from their z_i (docs/results.md, "What the
decoder gets wrong").

``unclip eval decoder`` says which scenes a reconstruction keeps; this says how the others are lost. Each of the
``--n`` test scenes is decoded from its CLIP image embedding as the evaluation decodes it (same seeds), the judge
detects the objects of the reconstruction, and the detected (shape, colour) multiset is compared with the scene's:

- ``missing object`` / ``extra object``: fewer or more objects than the scene has;
- with the count right, ``shape wrong`` and/or ``colour wrong``: the multisets of shapes or of colours differ;
- ``binding wrong``: shapes and colours are each right, paired wrongly (a swap);
- ``exact``: the same objects.

Tallied per object count, with the judge on the real images as the ceiling (how often it reads the source
scene right at the decoder's resolution).

    python scripts/experiments/reconstruction_failures.py [--model DIR] [--n 96] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from unclip.data.shapes import detect
from unclip.diffusion import generators_from_seeds
from unclip.eval.generation import held_out_images, judge_ready
from unclip.pipeline import UnCLIPPipeline

BUNDLED = "src/unclip/assets/shapes-model"


def failure_kind(truth: list[tuple[str, str]], found: list[tuple[str, str]]) -> str:
    """How the detected objects ``found`` differ from the scene's ``truth``, as (shape, colour) lists."""
    if len(found) != len(truth):
        return "missing object" if len(found) < len(truth) else "extra object"
    same = collections.Counter(truth) == collections.Counter(found)
    shapes = collections.Counter(s for s, _ in truth) == collections.Counter(s for s, _ in found)
    colours = collections.Counter(c for _, c in truth) == collections.Counter(c for _, c in found)
    if same:
        return "exact"
    if shapes and colours:
        return "binding wrong"
    return " and ".join(k for k, ok in (("shape wrong", shapes), ("colour wrong", colours)) if not ok)


def tally(rows: list[tuple[int, str]]) -> dict[str, dict[str, int]]:
    """{object count: {kind: scenes}} from (object count, kind) rows."""
    out: dict[str, dict[str, int]] = {}
    for count, kind in sorted(rows):
        out.setdefault(str(count), {}).setdefault(kind, 0)
        out[str(count)][kind] += 1
    return out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=BUNDLED)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", help="write the tallies and every scene's objects here")
    args = ap.parse_args()
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    real, scenes = held_out_images(None, args.n, pipe.decoder.config.resolution)
    decoded, source, scenes_out = [], [], []
    for i in range(0, len(real), args.batch_size):
        x = real[i : i + args.batch_size]
        fake = pipe.decode(pipe.clip.encode_image(x), generators_from_seeds(range(i, i + len(x))))  # eval's seeds
        for scene, made, real_image in zip(scenes[i : i + len(x)], judge_ready(fake), judge_ready(x), strict=True):
            truth = [(o.shape, o.colour) for o in scene.objects]
            found = [(d.shape, d.colour) for d in detect(made)]
            seen = [(d.shape, d.colour) for d in detect(real_image)]
            decoded.append((len(truth), failure_kind(truth, found)))
            source.append((len(truth), failure_kind(truth, seen)))
            scenes_out.append({"truth": truth, "reconstruction": found, "source": seen})
        print(f"{min(i + args.batch_size, len(real))}/{len(real)} scenes", flush=True)
    result = {"model": args.model, "n": len(real), "reconstructions": tally(decoded), "sources": tally(source)}
    for name in ("reconstructions", "sources"):
        print(name)
        for count, kinds in result[name].items():
            total = sum(kinds.values())
            print(f"  {count} object(s), {total} scenes: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({**result, "scenes": scenes_out}, f, indent=1)


if __name__ == "__main__":
    main()
