"""Shapes world figures: generator speed, judge speed, and judge agreement under each condition of issue 3.

Agreement is over (scene, category) pairs: the judge's verdict on the rendered image against the requirement
``requirements_for_scene`` derives from the scene, compared with the verdict on the ground-truth scene graph.
"Wrong requirement" judges each image against the requirements of another scene and reports how often the judge
rejects those that are false of the image. "Exact" is the share of images whose detected (shape, colour)
multiset equals the scene's.

    .venv/bin/python benchmarks/shapes_world.py            # the issue's sizes: 2,000 scenes
    .venv/bin/python benchmarks/shapes_world.py --n 200    # quick look
    .venv/bin/python benchmarks/shapes_world.py --sheet docs/shapes_contact_sheet.png   # only the contact sheet

Speeds are for one process on one thread. Each is reported twice: wall-clock, and per second of this process's own
CPU time. On a shared machine the second is the better estimate of what one idle core does; the load average is
printed so the conditions are on record. Generator speeds are the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

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


def _single_thread() -> str:
    """Pin numerical libraries to one thread, so speeds are per core (the judge and generator are numpy code)."""
    try:
        import torch
    except ImportError:
        return "torch absent"
    torch.set_num_threads(1)
    return "torch threads 1"


def _best_rate(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, float]:
    """Best items per wall-second and per CPU-second of this process over ``repeats`` runs of ``fn``."""
    wall = cpu = 0.0
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = max(wall, n / (time.perf_counter() - t))
        cpu = max(cpu, n / max(time.process_time() - c, 1e-9))
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="test scenes per condition")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="runs per generator speed figure; the best is reported")
    ap.add_argument("--sheet", help="write a contact sheet of train samples with captions to this path and stop")
    args = ap.parse_args()
    if args.sheet:
        contact_sheet(args.sheet)
        return

    torch_threads = _single_thread()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {torch_threads}")
    world = ShapesWorld("test", seed=args.seed, resolution=64)
    n_gen = min(args.n, 2000)
    wall, cpu = _best_rate(lambda: [world[i] for i in range(n_gen)], n_gen, args.repeats)
    print(f"generator: {wall:.0f} samples/s wall, {cpu:.0f} per CPU-second at 64 px (scene + render + caption)")
    scenes = [world.scene(i) for i in range(args.n)]
    n_render = min(500, args.n)
    wall, cpu = _best_rate(lambda: [render(s, 64) for s in scenes[:n_render]], n_render, args.repeats)
    print(f"renderer alone: {wall:.0f} images/s wall, {cpu:.0f} per CPU-second at 64 px")

    print(f"\njudge agreement with ground truth over {args.n} test scenes:")
    print(f"{'condition':24s} {'agree':>7s} {'pairs':>6s} {'exact':>7s} {'img/s':>7s} {'cpu':>6s}  per category")
    for name, (res, perturb) in CONDITIONS.items():
        hits: dict[str, list[bool]] = {}
        exact, judge_time, judge_cpu = 0, 0.0, 0.0
        for i, scene in enumerate(scenes):
            image = perturb(render(scene, res), i)
            t, c = time.perf_counter(), time.process_time()
            found = detect(image)
            judge_time += time.perf_counter() - t
            judge_cpu += time.process_time() - c
            exact += sorted((d.shape, d.colour) for d in found) == sorted((o.shape, o.colour) for o in scene.objects)
            for cat, req in requirements_for_scene(scene).items():
                hits.setdefault(cat, []).append(req.satisfied_by(found) == req.satisfied_by(scene.objects))
        pairs = [h for v in hits.values() for h in v]
        per_cat = " ".join(f"{c}={np.mean(v):.3f}" for c, v in hits.items())
        print(
            f"{name:24s} {np.mean(pairs):7.4f} {len(pairs):6d} {exact / len(scenes):7.4f} "
            f"{len(scenes) / judge_time:7.0f} {len(scenes) / judge_cpu:6.0f}  {per_cat}"
        )

    for name, perturb in (("64 px", lambda im, i: im), ("JPEG q50, 64 px", lambda im, i: jpeg(im, 50))):
        rejected = false_total = agree = total = 0
        for i, scene in enumerate(scenes):
            found = detect(perturb(render(scene, 64), i))
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
            f"wrong requirement (another scene's, {name}): rejected {rejected / false_total:.4f} of {false_total} "
            f"false ones; agreement {agree / total:.4f} over {total}"
        )


if __name__ == "__main__":
    main()
