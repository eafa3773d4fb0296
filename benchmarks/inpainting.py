"""What inpainting costs: RePaint at several resamplings against plain replacement and text to image.

RePaint (``unclip.diffusion.inpainting``) walks back up its grid and down again, so each resampling costs about
one more pass of the decoder; the upsampler's short SDEdit grid (the bundled model's 3 steps) is shorter than one
block and runs plainly. This script inpaints the same held-out scenes (the edits of ``unclip eval inpainting``)
with each setting and times text to image from the same captions, alternating, and prints each one's best time per
image, its ratio to text to image, and the decoder's network calls (each batches every guidance branch).

    OMP_NUM_THREADS=2 python benchmarks/inpainting.py
    python benchmarks/inpainting.py --model DIR --device cuda --batch 16 --resample 1,2,4,8
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

from measure import model_benchmark_parser, timed
from unclip.diffusion.inpainting import repaint_path
from unclip.eval.inpainting import edit_cases
from unclip.pipeline import UnCLIPPipeline
from unclip.pipeline.inpainting import inpaint_batch


def main(argv: list[str] | None = None) -> None:
    p = model_benchmark_parser(__doc__, needs="", batch=4, batch_help="scenes inpainted per call", repeats=2)
    p.add_argument("--resample", default="1,2,4,8", help="RePaint resamplings to time (1: plain replacement)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    pipe = UnCLIPPipeline.from_pretrained(args.model, device=args.device)
    base = pipe.settings
    cases = edit_cases(args.batch, pipe.resolution)
    images, fill = torch.stack([c["image"] for c in cases]), torch.stack([c["fill"] for c in cases])
    captions, seeds = [c["caption"] for c in cases], list(range(args.batch))
    runs = {"text to image": lambda: pipe(captions, seed=seeds)}
    calls = {"text to image": base.decoder_steps}
    for r in (int(v) for v in args.resample.split(",")):
        settings = dataclasses.replace(base, inpaint_resample=r)

        def run(settings=settings):
            pipe.settings = settings
            try:
                return inpaint_batch(pipe, images, fill, captions, seeds)
            finally:
                pipe.settings = base

        name = "replacement" if r == 1 else f"RePaint, {r} resamplings"
        runs[name] = run
        path = repaint_path(base.decoder_steps, r, base.inpaint_jump)
        calls[name] = sum(b > a for a, b in itertools.pairwise(path))
    best = dict.fromkeys(runs, float("inf"))
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                best[name] = min(best[name], timed(fn, device))
    print(f"inpainting with {args.model} on {args.device}: {args.batch} scenes a call, decoder {base.decoder_sampler} "
          f"{base.decoder_steps} steps, blocks of {base.inpaint_jump}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    t2i = best["text to image"]
    for name, seconds in best.items():
        per = seconds / args.batch
        ratio = seconds / t2i
        print(f"  {name:26s} {per:6.2f} s per image  {ratio:5.2f}x text to image  {calls[name]:4d} decoder calls")


if __name__ == "__main__":
    main()
