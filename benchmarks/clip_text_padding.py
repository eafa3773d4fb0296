"""CLIP training step with the full text context against the context cut after the batch's longest caption.

The CLIP stage tokenizes captions and their hard negatives to the tower's fixed context (64 for ``small``) and
used to run the text tower over all of it, although Shapes-world captions take 8-20 positions and the causal
tower pooled at EOT never looks past a caption's EOT. ``Tokenizer.trimmed`` cuts the padding; the losses are
equal (tests/clip/test_clip_stage.py). This measures one training step (forward, loss, backward) both ways on
real Shapes-world batches with the stage's hard negatives, in one process, alternating, and prints the ratio.

    .venv/bin/python benchmarks/clip_text_padding.py [--preset small] [--batch-size 64] [--negatives 5]
        [--steps 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import timed
from unclip.clip.loss import contrastive_loss
from unclip.data.shapes.batch import render_batch
from unclip.train.clip_batch import owned_negatives
from unclip.train.clip_stage import ClipStage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--negatives", type=int, default=5, help="hard negatives per caption (the GPU run's 5)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant, after one warm-up each")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)

    stage = ClipStage()
    config = replace(stage.presets()[args.preset].model, negatives_per_caption=args.negatives)
    torch.manual_seed(0)
    model = stage.build(config).to(device).train()
    tokenizer = stage.tokenizer(config)
    samples, images = render_batch(args.batch_size, config.clip.vision.image_size, split="train")
    images = images.to(device)
    captions = [s.caption for s in samples]
    owned = owned_negatives(captions, [s.scene.to_json() for s in samples], list(range(len(samples))),
                           config.negative_kinds, config.negatives_per_caption)  # fmt: skip
    texts = captions + [t for _, _, t in owned]
    owners = torch.tensor([i for i, _, _ in owned], dtype=torch.long, device=device)
    full, _ = tokenizer(texts)
    variants = {"full context": full.to(device), "trimmed": tokenizer.trimmed(texts).to(device)}

    def step(ids: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        z_i, z_all, scale = model(images, ids)
        n = len(captions)
        contrastive_loss(z_i, z_all[:n], scale, z_all[n:], owners).loss.backward()

    times: dict[str, list[float]] = {k: [] for k in variants}
    for ids in variants.values():
        step(ids)  # warm-up
    for _ in range(args.steps):
        for name, ids in variants.items():
            times[name].append(timed(lambda ids=ids: step(ids), device))
    print(f"CLIP {args.preset}, batch {args.batch_size} + {len(owned)} hard negatives, {device} "
          f"({torch.get_num_threads()} threads), median of {args.steps} steps")  # fmt: skip
    base = statistics.median(times["full context"])
    for name, ids in variants.items():
        t = statistics.median(times[name])
        print(f"  {name:<13} text length {ids.shape[1]:>3}: {t * 1000:8.1f} ms/step  ({base / t:.2f}x)")


if __name__ == "__main__":
    main()
