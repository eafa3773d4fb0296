"""Which tower loses attribute binding: a controlled swap probe (Winoground's scores, Thrush et al. 2022).

The binding accuracy of ``clip_eval`` says *that* a CLIP confuses "a red circle and a blue square" with "a blue
circle and a red square"; this probe says *where*. It takes two-object Shapes-world scenes whose objects differ in
colour and in shape, renders each as drawn (A) and with the two colours exchanged (B, every position, size and
the background unchanged), and captions both in one template, so that image and caption pairs differ only in the
binding. From the four embeddings it reports:

* ``image_cosine`` and ``text_cosine``: how far apart each tower puts the two versions (1: it cannot see the
  difference at all, as a bag-of-words text encoder cannot);
* ``alignment``: the cosine between the image difference z_i(A) − z_i(B) and the text difference
  z_t(A) − z_t(B). Matching needs both towers to move in the *same* direction; two towers that each see the swap
  but encode it differently give about 0;
* Winoground's ``text_score`` (each image scores its own caption higher), ``image_score`` (each caption scores its
  own image higher) and ``group_score`` (both). Chance is 0.25, 0.25 and 1/6; a tie counts as a failure.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unclip.data.shapes import ShapesWorld
from unclip.data.shapes.batch import scenes_tensor

TEMPLATE = "a {} {} and a {} {}"
CHANCE = {"text_score": 0.25, "image_score": 0.25, "group_score": 1 / 6}


def swapped_pairs(
    n: int, split: str = "test", seed: int = 0, max_scan: int = 200_000
) -> list[tuple[Any, Any, str, str]]:
    """``n`` tuples (scene A, scene B with the two colours exchanged, caption of A, caption of B)."""
    world = ShapesWorld(split=split, seed=seed)
    out = []
    for i in range(max_scan):
        scene = world.scene(i)
        if len(scene.objects) != 2:
            continue
        a, b = scene.objects
        if a.colour == b.colour or a.shape == b.shape:  # a swap would change nothing, or nothing nameable
            continue
        swapped = dataclasses.replace(
            scene, objects=(dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour))
        )
        out.append((scene, swapped, TEMPLATE.format(a.colour, a.shape, b.colour, b.shape),
                    TEMPLATE.format(b.colour, a.shape, a.colour, b.shape)))  # fmt: skip
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} two-object scenes with distinct colours and shapes in {max_scan} of {split!r}")


def probe_scores(z_a: Tensor, z_b: Tensor, t_a: Tensor, t_b: Tensor) -> dict[str, float]:
    """The probe's figures from image embeddings of A and B and text embeddings of their captions, all ``(n, D)``."""
    z_a, z_b, t_a, t_b = (F.normalize(x.double(), dim=-1) for x in (z_a, z_b, t_a, t_b))
    s_aa, s_ab, s_ba, s_bb = ((x * y).sum(-1) for x, y in ((z_a, t_a), (z_a, t_b), (z_b, t_a), (z_b, t_b)))
    text = (s_aa > s_ab) & (s_bb > s_ba)  # each image prefers its own caption
    image = (s_aa > s_ba) & (s_bb > s_ab)  # each caption prefers its own image
    dz, dt = z_a - z_b, t_a - t_b
    aligned = (F.normalize(dz, dim=-1) * F.normalize(dt, dim=-1)).sum(-1)
    # A tower that cannot tell A from B has no difference direction: its alignment is 0, not NaN.
    aligned = torch.where((dz.norm(dim=-1) > 1e-9) & (dt.norm(dim=-1) > 1e-9), aligned, torch.zeros_like(aligned))
    return {
        "image_cosine": float((z_a * z_b).sum(-1).mean()),
        "text_cosine": float((t_a * t_b).sum(-1).mean()),
        "alignment": float(aligned.mean()),
        "text_score": float(text.double().mean()),
        "image_score": float(image.double().mean()),
        "group_score": float((text & image).double().mean()),
    }


@torch.no_grad()
def binding_probe(clip, n: int = 300, split: str = "test", seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Run the probe on ``n`` scene pairs of ``split`` with ``clip`` (anything with encode_image / encode_text)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pairs = swapped_pairs(n, split, seed)

    def encode(k: int, text: bool) -> Tensor:
        out = []
        for i in range(0, n, batch_size):
            chunk = [p[k] for p in pairs[i : i + batch_size]]
            z = clip.encode_text(chunk).embedding if text else clip.encode_image(scenes_tensor(chunk, clip.image_size))
            out.append(z.float().cpu())
        return torch.cat(out)

    scores = probe_scores(encode(0, False), encode(1, False), encode(2, True), encode(3, True))
    return {"n": n, "split": split, "template": TEMPLATE, **scores, "chance": CHANCE}
