"""Can a CLIP's image tower learn which object is on the left, given captions that say it? (docs/clip.md, "Relations")

The mirror of ``relation_text_only.py``. Trains only the image tower and its projection of a CLIP model folder;
the text tower is frozen and its embeddings of every training caption are computed once. Each step draws 64 pairs
of the binding probe's kind from the *train* split (``placed_pairs``: a two-object scene and the same scene with
the objects' places exchanged, captioned "a red circle to the left of a blue square" and "... to the right of
..."), renders the 128 images and minimises the symmetric contrastive loss over them and their 128 captions plus
the four Winoground comparisons of each pair (``clip.loss.pair_terms``), and with ``--hinge`` the separation hinge
(margin 0.5) between the two images of each pair. Every 50 steps it prints, on the probe's *test* pairs, the
relation scores (Winoground text / image / group, image cosine of a pair, alignment of the two towers'
differences) and the image tower's placement decodability (linear probe, chance 0.5).

    python scripts/experiments/relation_image_only.py MODEL_DIR --steps 300 [--hinge] [--save DIR]

With a text tower that binds (``relation_text_only.py --save``), "left" and "right" captions point in different
directions and each pair's contrastive gradient tells the image tower which way to move; with a collapsed one they
do not, and only the hinge can push the images apart. An experiment, not a training command: the image tower sees
no other captions here.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from tower_args import tower_parser

from unclip.clip.checkpoint import load_clip
from unclip.clip.loss import contrastive_loss, pair_terms, separation_loss
from unclip.data.shapes.batch import scenes_tensor
from unclip.eval.binding_probe import image_decodability, pair_probe_scores, placed_pairs


@torch.no_grad()
def text_embeddings(clip, texts: list[str], batch: int = 256) -> torch.Tensor:
    return torch.cat([clip.encode_text(texts[i : i + batch]).embedding.float() for i in range(0, len(texts), batch)])


@torch.no_grad()
def relation_figures(clip, pairs) -> dict[str, float]:
    clip.eval()
    scores = pair_probe_scores(clip, pairs)
    placement = image_decodability(clip.encode_image, clip.image_size, 160, 100, edit="placement")["accuracy"]
    clip.train()
    keep = ("image_cosine", "text_cosine", "alignment", "text_score", "image_score", "group_score")
    return {**{k: round(scores[k], 4) for k in keep}, "placement": round(placement, 4)}


def main() -> None:
    parser = tower_parser(__doc__, steps=300)
    parser.add_argument("--hinge", action="store_true", help="add the separation hinge between each pair's images")
    parser.add_argument("--pool", type=int, default=4096, help="training pairs drawn from the train split")
    args = parser.parse_args()
    clip = load_clip(args.model, args.device)
    clip.requires_grad_(False)
    params = [*clip.visual.parameters(), *clip.visual_proj.parameters()]
    for p in params:
        p.requires_grad_(True)
    train, test = placed_pairs(args.pool, "train", 0), placed_pairs(300, "test", 0)
    train_a, train_b = (text_embeddings(clip, [p[k] for p in train]) for k in (2, 3))
    scale = float(clip.temperature_scale())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    gen, b = torch.Generator().manual_seed(7), args.batch
    print(json.dumps({"step": 0, **relation_figures(clip, test)}), flush=True)
    a, bb = torch.arange(b, device=args.device), torch.arange(b, device=args.device) + b
    for step in range(1, args.steps + 1):
        pick = torch.randperm(len(train), generator=gen)[:b].tolist()
        scenes = [train[k][0] for k in pick] + [train[k][1] for k in pick]
        images = scenes_tensor(scenes, clip.image_size).to(args.device)
        z_i = clip.image_features(images)
        z_t = F.normalize(torch.cat([train_a[pick], train_b[pick]]), dim=-1)  # frozen: no graph
        loss = contrastive_loss(z_i, z_t, scale).loss + pair_terms(z_i, z_t, scale, a, bb).loss
        if args.hinge:
            loss = loss + separation_loss(z_i, a, bb, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            figures = relation_figures(clip, test)
            print(json.dumps({"step": step, "loss": round(float(loss.detach()), 4), **figures}), flush=True)
        if args.save and step % 100 == 0:
            clip.save_pretrained(f"{args.save}_{step}")


if __name__ == "__main__":
    main()
