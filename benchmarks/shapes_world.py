"""Shapes world figures: generator speed, judge speed, and judge agreement under each condition of issue 3.

Agreement is over (scene, category) pairs: the judge's verdict on the rendered image against the requirement
``requirements_for_scene`` derives from the scene, compared with the verdict on the ground-truth scene graph.
"Wrong requirement" judges each image against the requirements of another scene and reports how often the judge
rejects those that are false of the image. "Exact" is the share of images whose detected (shape, colour)
multiset equals the scene's.

    .venv/bin/python benchmarks/shapes_world.py            # the issue's sizes: 2,000 scenes
    .venv/bin/python benchmarks/shapes_world.py --n 200    # quick look
    .venv/bin/python benchmarks/shapes_world.py --sheet docs/shapes_contact_sheet.png   # only the contact sheet
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from unclip.data.shapes import ShapesWorld, detect, render, requirements_for_scene
from unclip.data.shapes.perturb import add_noise, blur, jpeg

CONDITIONS = {
    "clean 64 px": (64, lambda im, i: im),
    "clean 256 px": (256, lambda im, i: im),
    "clean 32 px": (32, lambda im, i: im),
    "noise σ=0.08 (64 px)": (64, lambda im, i: add_noise(im, 0.08, np.random.default_rng(i))),
    "blur σ=1 px (64 px)": (64, lambda im, i: blur(im, 1.0)),
    "JPEG q50 (64 px)": (64, lambda im, i: jpeg(im, 50)),
}


def contact_sheet(path: str, cols: int = 4, rows: int = 5, cell: int = 192) -> None:
    """Train samples rendered at ``cell`` px with their captions wrapped underneath."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    world = ShapesWorld("train", seed=0, resolution=cell)
    text_h = 80
    sheet = Image.new("RGB", (cols * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for k in range(cols * rows):
        s = world[k]
        x, y = (k % cols) * cell, (k // cols) * (cell + text_h)
        sheet.paste(Image.fromarray(s.image), (x, y))
        draw.multiline_text((x + 4, y + cell + 3), textwrap.fill(s.caption, 30), fill="black", font=font, spacing=1)
    sheet.save(path, optimize=True)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="test scenes per condition")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", help="write a contact sheet of train samples with captions to this path and stop")
    args = ap.parse_args()
    if args.sheet:
        contact_sheet(args.sheet)
        return

    world = ShapesWorld("test", seed=args.seed, resolution=64)
    t = time.perf_counter()
    n_gen = min(args.n, 2000)
    for i in range(n_gen):
        world[i]
    dt = time.perf_counter() - t
    print(f"generator: {n_gen / dt:.0f} samples/s at 64 px (scene + render + caption, one process)")
    scenes = [world.scene(i) for i in range(args.n)]
    t = time.perf_counter()
    for s in scenes[:500]:
        render(s, 64)
    print(f"renderer alone: {min(500, args.n) / (time.perf_counter() - t):.0f} images/s at 64 px")

    print(f"\njudge agreement with ground truth over {args.n} test scenes:")
    print(f"{'condition':24s} {'agree':>7s} {'pairs':>6s} {'exact':>7s} {'img/s':>7s}  per category")
    for name, (res, perturb) in CONDITIONS.items():
        hits: dict[str, list[bool]] = {}
        exact, judge_time = 0, 0.0
        for i, scene in enumerate(scenes):
            image = perturb(render(scene, res), i)
            t = time.perf_counter()
            found = detect(image)
            judge_time += time.perf_counter() - t
            exact += sorted((d.shape, d.colour) for d in found) == sorted((o.shape, o.colour) for o in scene.objects)
            for cat, req in requirements_for_scene(scene).items():
                hits.setdefault(cat, []).append(req.satisfied_by(found) == req.satisfied_by(scene.objects))
        pairs = [h for v in hits.values() for h in v]
        per_cat = " ".join(f"{c}={np.mean(v):.3f}" for c, v in hits.items())
        print(
            f"{name:24s} {np.mean(pairs):7.4f} {len(pairs):6d} {exact / len(scenes):7.4f} "
            f"{len(scenes) / judge_time:7.0f}  {per_cat}"
        )

    rejected = false_total = agree = total = 0
    for i, scene in enumerate(scenes):
        found = detect(render(scene, 64))
        other = scenes[(i + 1) % len(scenes)]
        for req in requirements_for_scene(other).values():
            truth = req.satisfied_by(scene.objects)
            verdict = req.satisfied_by(found)
            agree += verdict == truth
            total += 1
            if not truth:
                false_total += 1
                rejected += not verdict
    print(
        f"\nwrong requirement (another scene's, 64 px): rejected {rejected / false_total:.4f} of {false_total} false "
        f"ones; agreement {agree / total:.4f} over {total}"
    )


if __name__ == "__main__":
    main()
