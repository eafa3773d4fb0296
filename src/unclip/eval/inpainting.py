"""How well inpainting edits and repairs Shapes-world scenes, judged against exact scene graphs.

Each case is a held-out scene of two objects that differ in shape and colour, with the second object's frame
masked (plus a margin short of the gap the world keeps between frames, so the mask never touches the first).

- **Edit**: recolour the masked object. The caption names both objects with the new colour ("a red circle and
  a green square"), z_i comes from the prior, and the edit counts when the judge finds the edited scene graph
  (every requirement of the scene with the object recoloured, its relation included).
- **Edit by text diff**: the same edit, with z_i the image's own turned toward the change of caption, §3.3's
  slerp(z_i, norm(z_t(new) − z_t(old)), 0.5), instead of the prior's sample from the new caption.
- **Repair**: no caption; z_i is CLIP's embedding of the whole source image (the masked object included), and
  the repair counts when the judge finds the original scene graph.
- **Text-to-image baseline**: the edit's caption without an image; it counts when the colours are bound right
  (the colour-attribution requirement), the one thing the edit's caption asks that generation can also give.
  This is where unCLIP is weakest (§7): the known half of an edited image tells the decoder which object the
  new colour belongs to, which z_i alone does not.

Every inpainting is checked to return the unmasked pixels exactly (``max_change_outside``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from unclip.eval.generation import judge_ready

EDIT_COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
# What inpainting_rates can measure: RePaint's edits and repairs, edits by plain replacement, and text-to-image.
RUNS = ("edit", "edit_textdiff", "repair", "edit_replacement", "text_to_image")
TEXT_DIFF_THETA = 0.5  # the slerp angle of the text-diff edits (§3.3's range is 0.25-0.5)


def _a(word: str) -> str:
    """The word with its indefinite article, as the world's captions have it ("an orange square")."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def object_fill(obj, resolution: int) -> torch.Tensor:
    """(1, R, R) mask of an object's frame plus a third of the world's gap on every side (1: fill)."""
    from unclip.data.shapes.scene import GAP

    m = obj.half + GAP / 3
    y0, y1 = max(0, round((obj.y - m) * resolution)), min(resolution, round((obj.y + m) * resolution))
    x0, x1 = max(0, round((obj.x - m) * resolution)), min(resolution, round((obj.x + m) * resolution))
    fill = torch.zeros(1, resolution, resolution)
    fill[:, y0:y1, x0:x1] = 1
    return fill


def edit_cases(n: int, resolution: int, split: str = "test", seed: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` two-object scenes of ``split`` whose objects differ in shape and colour, each with its
    image (3, R, R), the fill mask of its second object, the recoloured scene and the edit's caption."""
    from unclip.data.shapes.batch import first_samples, images_tensor

    def distinct_pair(sample) -> bool:
        objs = sample.scene.objects
        return len(objs) == 2 and objs[0].shape != objs[1].shape and objs[0].colour != objs[1].colour

    rng = np.random.default_rng(seed)
    cases = []
    for sample in first_samples(n, resolution, distinct_pair, "two-object scenes", split, seed):
        a, b = sample.scene.objects
        colour = str(rng.choice([c for c in EDIT_COLOURS if c not in (a.colour, b.colour)]))
        edited = dataclasses.replace(sample.scene, objects=(a, dataclasses.replace(b, colour=colour)))
        cases.append({
            "scene": sample.scene, "edited": edited, "fill": object_fill(b, resolution),
            "image": images_tensor([sample], resolution)[0],
            "caption": f"{_a(a.colour)} {a.shape} and {_a(colour)} {b.shape}",
            "source_caption": f"{_a(a.colour)} {a.shape} and {_a(b.colour)} {b.shape}",
        })  # fmt: skip
    return cases


def _judged(images: torch.Tensor, scenes: list) -> list[dict[str, bool]]:
    from unclip.data.shapes import judge
    from unclip.data.shapes.requirements import requirements_for_scene

    return [
        {c: bool(judge(im, r)) for c, r in requirements_for_scene(scene).items()}
        for im, scene in zip(judge_ready(images), scenes, strict=True)
    ]


def _summary(verdicts: list[dict[str, bool]]) -> dict[str, Any]:
    cats = sorted({c for v in verdicts for c in v})
    return {
        "rate": float(np.mean([all(v.values()) for v in verdicts])),
        "categories": {c: float(np.mean([v[c] for v in verdicts if c in v])) for c in cats},
    }


@torch.no_grad()
def inpainting_rates(
    pipe, *, n: int = 32, seed: int = 0, batch_size: int = 8, split: str = "test", resample: int | None = None,
    jump: int | None = None, runs: tuple[str, ...] = RUNS, progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Edit and repair rates with RePaint (``resample``/``jump``: default the pipeline's settings), and the
    baselines: the same edits by plain replacement (``resample=1``) and their captions by text-to-image. ``runs``
    picks which of :data:`RUNS` to measure."""
    from tqdm.auto import tqdm

    from unclip.pipeline.inpainting import inpaint_batch, text_diff_embeddings

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not runs or any(r not in RUNS for r in runs):
        raise ValueError(f"runs must be some of {', '.join(RUNS)}, got {runs}")
    base = pipe.settings
    changes = {k: v for k, v in (("inpaint_resample", resample), ("inpaint_jump", jump)) if v is not None}
    repaint = dataclasses.replace(base, **changes)
    cases = edit_cases(n, pipe.resolution, split, seed)
    inpaintings = {
        "edit": (repaint, True), "edit_textdiff": (repaint, True), "repair": (repaint, False),
        "edit_replacement": (dataclasses.replace(repaint, inpaint_resample=1), True),
    }  # fmt: skip
    result: dict[str, Any] = {}
    worst = 0.0
    try:
        for name, (settings, edit) in inpaintings.items():
            if name not in runs:
                continue
            pipe.settings = settings
            start, verdicts = time.perf_counter(), []
            for i in tqdm(range(0, n, batch_size), desc=name, disable=not progress):
                part = cases[i : i + batch_size]
                images = torch.stack([c["image"] for c in part])
                fill = torch.stack([c["fill"] for c in part])
                captions = [c["caption"] for c in part] if edit else None
                z_i = None
                if name == "edit_textdiff":  # the image's own z_i turned toward the new caption (§3.3)
                    sources = [c["source_caption"] for c in part]
                    z_i = text_diff_embeddings(pipe, images, sources, captions, TEXT_DIFF_THETA)
                seeds = [seed + i + j for j in range(len(part))]
                out = inpaint_batch(pipe, images, fill, captions, seeds, z_i=z_i).cpu()
                worst = max(worst, float(((out - images).abs() * (1 - fill)).max()))
                verdicts += _judged(out, [c["edited" if edit else "scene"] for c in part])
            result[name] = _summary(verdicts) | {"seconds_per_image": (time.perf_counter() - start) / n}
        if "text_to_image" in runs:
            pipe.settings = base
            start, verdicts = time.perf_counter(), []
            for i in range(0, n, batch_size):
                part = cases[i : i + batch_size]
                out = pipe([c["caption"] for c in part], seed=[seed + i + j for j in range(len(part))]).tensors
                verdicts += [{"colour_attribution": v["colour_attribution"]}
                             for v in _judged(out, [c["edited"] for c in part])]  # fmt: skip
            result["text_to_image"] = _summary(verdicts) | {"seconds_per_image": (time.perf_counter() - start) / n}
    finally:
        pipe.settings = base
    return result | {
        "n": n, "resample": repaint.inpaint_resample, "jump": repaint.inpaint_jump, "max_change_outside": worst,
    }  # fmt: skip
