"""CPU cost of the CLIP stage's per-batch preparation (hard negatives, counterfactual scenes) against a training step.

The CLIP stage writes each caption's hard negatives and, with ``counterfactual_kinds``, parses and renders the
counterfactual scenes (``unclip.data.shapes.counterfactual``). That is CPU work on every batch. Done in the training
loop it stalls the accelerator for as long as it takes; ``Stage.batch_extras`` moves it into the data loader's
workers, where it overlaps the step. This prints the preparation's CPU time per batch (one thread, process CPU
time, so other processes do not inflate it) beside the time of one training step (forward, loss, backward) on the
extended batch, and their ratio: the share of each step the accelerator would wait without the workers.

    .venv/bin/python benchmarks/clip_batch_prep.py [--batch-size 256] [--negatives 5] [--repeats 3]
        [--device cpu|cuda]
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
from unclip.data.shapes.batch import render_batch
from unclip.train.clip_batch import EDITS_KEY, text_edits
from unclip.train.clip_stage import ClipStage
from unclip.train.stage import Batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--negatives", type=int, default=5, help="hard negatives per caption")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (the median is printed)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    device = torch.device(args.device)

    stage = ClipStage()
    base = replace(stage.presets()[args.preset].model, negatives_per_caption=args.negatives)
    variants = {"text negatives": base, "+ counterfactual pairs": replace(base, counterfactual_kinds="swap,relation")}
    res = base.clip.vision.image_size
    samples, images = render_batch(args.batch_size, res, split="train")
    captions, scenes = [s.caption for s in samples], [s.scene.to_json() for s in samples]
    seeds = list(range(len(samples)))
    torch.manual_seed(0)
    model = stage.build(base).to(device).train()

    print(f"CLIP {args.preset}, batch {args.batch_size}, {args.negatives} negatives per caption, step on {device}")
    print(f"{'':<26}{'prep (CPU s)':>14}{'step (s)':>12}{'prep / step':>13}{'pairs':>7}")
    for name, config in variants.items():
        prep = statistics.median(
            timed(lambda c=config: text_edits(captions, scenes, seeds, res, c), torch.device("cpu"), "cpu")
            for _ in range(args.repeats)
        )
        edits = text_edits(captions, scenes, seeds, res, config)
        # The step alone, with the edits made beforehand as the loader's workers hand them over.
        extra = {EDITS_KEY: edits}
        batch = Batch(images, captions, scenes, torch.arange(len(seeds)), torch.tensor(seeds), extra).to(device)

        def step(c=config, b=batch) -> None:
            model.zero_grad(set_to_none=True)
            stage.loss(model, b, c).loss.backward()

        step()  # warm-up
        took = statistics.median(timed(step, device) for _ in range(args.repeats))
        print(f"{name:<26}{prep:>14.3f}{took:>12.3f}{prep / took:>13.2f}{len(edits['pairs']):>7}")


if __name__ == "__main__":
    main()
