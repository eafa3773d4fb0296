"""How well a noise-aware CLIP tower reads x_t: cos(f(x_t, t), CLIP(x_0)) on held-out Shapes-world scenes at fixed
timesteps, for the clean CLIP (an untrained tower: its own image side) and each tower given.
docs/results.md, "A noise-aware guide".

    python scripts/experiments/noised_tower_curve.py [--clip CLIP_DIR] [--n 64] TOWER_DIR ...
"""

from __future__ import annotations

import argparse

import torch

from unclip.clip import load_clip
from unclip.clip.noised import NoisedImageEncoder, from_clip, schedule_of
from unclip.data.shapes.batch import render_batch

TIMESTEPS = (0, 50, 100, 200, 300, 500, 700, 900, 990)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("towers", nargs="*", help="noised CLIP folders (unclip export of a noised_clip run)")
    parser.add_argument("--clip", default="src/unclip/assets/shapes-model/clip", help="the clean CLIP they read for")
    parser.add_argument("--n", type=int, default=64, help="held-out scenes")
    args = parser.parse_args()
    clip = load_clip(args.clip).eval()
    first = NoisedImageEncoder.from_pretrained(args.towers[0]) if args.towers else None
    resolution = first.config.resolution if first is not None else 32
    towers = {"clean CLIP": from_clip(clip, resolution).eval()}
    towers.update({path: NoisedImageEncoder.from_pretrained(path) for path in args.towers})
    alpha_bar = schedule_of(towers["clean CLIP"].config).alpha_bar
    _, x0 = render_batch(args.n, resolution, split="val")
    with torch.no_grad():
        target = clip.encode_image(x0)
        print("| t | " + " | ".join(str(t) for t in TIMESTEPS) + " |")
        print("|---|" + "---|" * len(TIMESTEPS))
        for name, tower in towers.items():
            row = []
            for t in TIMESTEPS:
                noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
                x_t = (alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * noise).float()
                row.append(float((tower(x_t, torch.full((args.n,), t)) * target).sum(-1).mean()))
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
