"""Does the decoder's conditioning keep what z_i says about binding? Distances through the z_i projections.

A linear probe reads a colour swap from the bundled CLIP's z_i at 0.99 (``binding_probe.image_decodability``),
yet the bundled decoder draws the swapped scene almost as often as the true one. This probe asks where the
difference is lost: for pairs of scenes that differ only by the binding (the two colours exchanged, or the two
objects' places), it compares the distance between the two versions with the distance between two unrelated
scenes, first in z_i itself and then in each of the decoder's z_i conditioning paths (the vector added to the
timestep embedding, and the context tokens). A ratio far below z_i's means the decoder's input layers squash the
binding directions, which the U-Net behind them then cannot recover.

    python -m unclip.eval.conditioning_probe MODEL_DIR [--n 300]   # prints JSON
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from torch import Tensor

Path_ = Callable[[Tensor], Tensor]


def separation(f: Path_, z_a: Tensor, z_b: Tensor, z_1: Tensor, z_2: Tensor) -> float:
    """mean‖f(z_a) − f(z_b)‖ / mean‖f(z_1) − f(z_2)‖: how far ``f`` puts the pairs (a, b) relative to (1, 2)."""
    if not (z_a.shape == z_b.shape and z_1.shape == z_2.shape):
        raise ValueError("the two sides of each set of pairs must have the same shape")

    def dist(x: Tensor, y: Tensor) -> Tensor:
        return (f(x) - f(y)).flatten(1).norm(dim=1).mean()

    with torch.no_grad():
        return float(dist(z_a, z_b) / dist(z_1, z_2))


def conditioning_paths(decoder) -> dict[str, Path_]:  # decoder: unclip.models.decoder.Decoder
    """z_i itself (and whitened, if the decoder whitens it) and each way the decoder passes it on (flattened)."""
    paths: dict[str, Path_] = {"z_i": lambda z: z}
    if decoder.config.z_whitening:  # what the projections see
        paths["whitened_z_i"] = lambda z: (z - decoder.z_mean.to(z.dtype)) @ decoder.z_whiten.to(z.dtype)
    paths["timestep_embedding"] = lambda z: decoder.z_i_conditioning(z)[0]
    if decoder.config.clip_tokens:
        paths["context_tokens"] = lambda z: decoder.z_i_conditioning(z)[1].flatten(1)
    return paths


def probe(clip, decoder, n: int = 300, split: str = "test") -> dict[str, dict[str, float]]:
    """{pair kind: {path: separation}} for colour-swapped and place-exchanged pairs of ``n`` two-object scenes;
    the unrelated pairs are the same scenes against each other in a shifted order."""
    from unclip.data.shapes.batch import scenes_tensor
    from unclip.eval.binding_probe import placed_pairs, swapped_pairs

    size = clip.image_size
    out = {}
    with torch.no_grad():
        for kind, pairs in (("swap", swapped_pairs(n, split)), ("place", placed_pairs(n, split))):
            z_a = torch.cat([clip.encode_image(scenes_tensor([p[0] for p in pairs[i : i + 64]], size))
                             for i in range(0, n, 64)])  # fmt: skip
            z_b = torch.cat([clip.encode_image(scenes_tensor([p[1] for p in pairs[i : i + 64]], size))
                             for i in range(0, n, 64)])  # fmt: skip
            shifted = z_a.roll(n // 2, dims=0)
            out[kind] = {name: separation(f, z_a, z_b, z_a, shifted) for name, f in conditioning_paths(decoder).items()}
    return out


def main(argv: list[str] | None = None) -> None:
    from unclip.pipeline import UnCLIPPipeline

    parser = argparse.ArgumentParser(
        prog="python -m unclip.eval.conditioning_probe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", help="a pipeline folder (CLIP and decoder)")
    parser.add_argument("--n", type=int, default=300, help="pairs of each kind (default 300)")
    args = parser.parse_args(argv)
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    result = probe(pipe.clip.float().eval(), pipe.decoder.float().eval(), args.n)
    print(json.dumps({"model": args.model, "n": args.n, "separation": result}, indent=2))


if __name__ == "__main__":
    main()
