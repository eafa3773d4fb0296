"""Can a CLIP's text tower learn to bind a relation to its objects from text alone? (docs/clip.md, "Relations")

Trains only the text tower and its projection of a CLIP model folder on Shapes-world relation captions, each step
64 of them, each with three more texts: its converse ("a square to the right of a star" for "a star left of a
square", the same meaning), its opposite ("a star right of a square") and the opposite's converse ("a square left
of a star": the same words in the other order). Every 50 steps it prints, over the 300 test pairs of the binding
probe, the mean cosine of a caption with each of the three and the converse score (the fraction of captions
closer to their converse than to both near misses).

    python scripts/experiments/relation_text_only.py MODEL_DIR --steps 200 --objective retrieval [--save DIR]

--objective retrieval: find the converse among all 256 texts of the step (clip.loss.paraphrase_retrieval_loss,
temperature 0.07) plus the separation hinge (margin 0.5) on both near misses; cosine: 1 - cos with the converse
plus the same hinge. An experiment, not a training command: nothing ties the text to the images here, and a CLIP
trained this way loses its alignment (docs/clip.md). ``--anchor W`` limits that: each step also encodes 64 captions
that state no relation and adds W x their mean 1 - cos with the starting tower's embedding of the same caption (a
distillation term that holds the rest of the text space where the images expect it).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import torch
from tower_args import tower_parser

from unclip.clip.checkpoint import load_clip
from unclip.clip.loss import paraphrase_retrieval_loss, separation_loss
from unclip.data.shapes import caption, converse_caption, parse_caption, sample_scene
from unclip.eval.binding_probe import converse_texts, placed_pairs
from unclip.train.clip_batch import relation_foils


def relation_quad(rng: np.random.Generator) -> tuple[str, str, str, str]:
    """(caption, converse, opposite, opposite's converse) of a random scene whose caption states a relation."""
    while True:
        text = caption(sample_scene(rng), rng)
        converse = converse_caption(text, rng)
        if converse is None:
            continue
        a, b = parse_caption(text).phrases
        if a == b:  # "a blue hexagon above a blue hexagon" is its own opposite
            continue
        foils = relation_foils(text, rng)
        if len(foils) == 2:
            return text, converse, *foils


def plain_captions(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` captions of random scenes that state no relation (the ones ``--anchor`` holds in place)."""
    out: list[str] = []
    while len(out) < n:
        text = caption(sample_scene(rng), rng)
        if converse_caption(text, rng) is None:
            out.append(text)
    return out


@torch.no_grad()
def converse_figures(clip, rows) -> dict[str, float]:
    clip.eval()
    e = [clip.encode_text(texts).embedding.float() for texts in rows]
    clip.train()
    converse, opposite, other_order = ((e[0] * e[k]).sum(-1) for k in (1, 2, 3))
    score = ((converse > opposite) & (converse > other_order)).float().mean()
    return {"converse": round(float(converse.mean()), 4), "opposite": round(float(opposite.mean()), 4),
            "same_words": round(float(other_order.mean()), 4), "score": round(float(score), 4)}  # fmt: skip


def main() -> None:
    parser = tower_parser(__doc__, steps=200)
    parser.add_argument("--objective", choices=("retrieval", "cosine"), default="retrieval")
    parser.add_argument("--anchor", type=float, default=0.0, help="weight of the distillation term (0: none)")
    args = parser.parse_args()
    clip = load_clip(args.model, args.device)
    teacher = copy.deepcopy(clip).eval().requires_grad_(False) if args.anchor else None
    rng, rows, b = np.random.default_rng(7), converse_texts(placed_pairs(300, "test", 0)), args.batch
    params = [*clip.text.parameters(), *clip.text_proj.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    print(json.dumps({"step": 0, **converse_figures(clip, rows)}), flush=True)
    anchors, converses = torch.arange(b, device=args.device) * 4, torch.arange(b, device=args.device) * 4 + 1
    for step in range(1, args.steps + 1):
        texts = [t for _ in range(b) for t in relation_quad(rng)]
        z = clip.text_features(clip.tokenizer.trimmed(texts).to(args.device))[0]
        hinge = separation_loss(z, anchors, anchors + 2, 0.5) + separation_loss(z, anchors, anchors + 3, 0.5)
        if args.objective == "cosine":
            pull = (1 - (z[anchors] * z[converses]).sum(-1)).mean()
        else:
            pull = paraphrase_retrieval_loss(z, anchors, converses, 0.07)[0]
        if args.anchor:
            ids = clip.tokenizer.trimmed(plain_captions(rng, b)).to(args.device)
            drift = 1 - (clip.text_features(ids)[0] * teacher.text_features(ids)[0]).sum(-1).mean()
            pull = pull + args.anchor * drift
        opt.zero_grad()
        (hinge + pull).backward()
        opt.step()
        if step % 50 == 0:
            loss = {"loss": round(float((hinge + pull).detach()), 4)}
            if args.anchor:
                loss["drift"] = round(float(drift.detach()), 4)
            print(json.dumps({"step": step, **loss, **converse_figures(clip, rows)}), flush=True)
        if args.save and step % 100 == 0:
            clip.save_pretrained(f"{args.save}_{step}")


if __name__ == "__main__":
    main()
