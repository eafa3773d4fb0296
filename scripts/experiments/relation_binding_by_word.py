"""Relation binding of CLIPs per relation word, on world captions (docs/clip.md, "Relations: placed pairs along y").

``unclip eval clip`` scores relation binding on the relation captions that its test scenes happen to have (about
80 of 300). This draws ``--n`` test scenes captioned with one of their clear relations (the world's captioner at
relation rate 1: every wording), pairs each caption with its opposite relation ("left of" ↔ "right of", "above" ↔
"below"; kept only when false of the scene) and reports, per CLIP, the fraction of images that score their own
caption higher: overall, per relation word and per object count. A CLIP that reads only a word's prior shows it
here as one word high and its opposite low (the bundled CLIP: "left of" 0.80, "right of" 0.24).

    python scripts/experiments/relation_binding_by_word.py CLIP_DIR [CLIP_DIR ...] [--n 400] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np
import torch
import torch.nn.functional as F

from unclip.clip.checkpoint import load_clip
from unclip.data.negatives import make_negative
from unclip.data.shapes import ShapesWorld, claims_hold, parse_caption
from unclip.data.shapes.batch import scenes_tensor


def relation_rows(n: int, split: str = "test", seed: int = 0) -> list[tuple[str, int, str, str, object]]:
    """``n`` (relation, object count, caption, opposite caption, scene) of ``split``, in world order."""
    world, rows, i = ShapesWorld(split, seed, relation_rate=1.0), [], 0
    while len(rows) < n:
        text, scene = world.captioned(i)
        i += 1
        relation = parse_caption(text).relation
        if relation is None:
            continue
        opposite = make_negative(text, "relation", np.random.default_rng([seed, i]))
        if opposite is not None and not claims_hold(parse_caption(opposite), scene):
            rows.append((relation, len(scene.objects), text, opposite, scene))
    return rows


@torch.no_grad()
def scores(clip, rows, batch: int = 100, device: str = "cpu") -> dict[str, object]:
    def chunks(values, encode):
        parts = [encode(values[k : k + batch]).float().cpu() for k in range(0, len(values), batch)]
        return F.normalize(torch.cat(parts), dim=-1)

    z = chunks([r[4] for r in rows], lambda s: clip.encode_image(scenes_tensor(s, clip.image_size).to(device)))
    t, o = (chunks([r[k] for r in rows], lambda s: clip.encode_text(s).embedding) for k in (2, 3))
    right = ((z * t).sum(-1) > (z * o).sum(-1)).tolist()
    by_word, by_count = collections.defaultdict(list), collections.defaultdict(list)
    for row, ok in zip(rows, right, strict=True):
        by_word[row[0]].append(ok)
        by_count[str(row[1])].append(ok)
    mean = lambda v: round(float(np.mean(v)), 4)  # noqa: E731
    return {"all": mean(right), "n": len(rows), "by_word": {k: mean(v) for k, v in sorted(by_word.items())},
            "by_objects": {k: mean(v) for k, v in sorted(by_count.items())}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="CLIP model folders")
    parser.add_argument("--n", type=int, default=400, help="relation captions (test split)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = relation_rows(args.n)
    for path in args.models:
        clip = load_clip(path, args.device).eval()
        out = {"model": path, **scores(clip, rows, device=args.device)}
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            words = "  ".join(f"{k} {v:.2f}" for k, v in out["by_word"].items())
            print(f"{path}: all {out['all']:.3f} | {words}", flush=True)


if __name__ == "__main__":
    main()
