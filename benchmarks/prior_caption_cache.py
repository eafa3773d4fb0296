"""Diffusion-prior sampling with the caption's keys and values computed once (now) against every step (before).

The prior's causal sequence is [caption tokens, z_t, timestep, x_t, output token]; the first ``text_len + 1``
positions never see the timestep or x_t, so ``CaptionCachedPrior`` computes them once per sampling run and each
step runs only the last three. This script samples a model's prior at its own settings (sampler, steps, guidance,
best-of) both ways for the same captions and seeds, alternating, and prints the best time of each, the ratio, and
the largest difference between the sampled embeddings.

    OMP_NUM_THREADS=2 python benchmarks/prior_caption_cache.py
    python benchmarks/prior_caption_cache.py --model DIR --device cuda --batch 64
"""

from __future__ import annotations

import torch

import unclip.prior.sampling as sampling_module
from measure import model_benchmark_parser, print_before_now, timed
from unclip.pipeline import UnCLIPPipeline
from unclip.prior import sample_diffusion_prior

CAPTIONS = ["a red circle", "two blue squares to the left of a green triangle", "three yellow stars", "a purple heart"]


def main(argv: list[str] | None = None) -> None:
    p = model_benchmark_parser(
        __doc__, needs="with a diffusion prior", batch=4, batch_help="captions per call", repeats=5
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    pipe = UnCLIPPipeline.from_pretrained(args.model, device=args.device)
    s = pipe.settings
    captions = (CAPTIONS * (args.batch // len(CAPTIONS) + 1))[: args.batch]
    enc, empty = pipe.encode_text(captions)
    cached_type = sampling_module.CaptionCachedPrior
    variants = {"every step (before)": lambda m: m, "caption cached (now)": cached_type}
    results, best = {}, dict.fromkeys(variants, float("inf"))

    def sample():
        gens = [torch.Generator().manual_seed(i) for i in range(args.batch)]
        return sample_diffusion_prior(
            pipe.prior, enc.embedding, enc.token_states, enc.mask, keep=~empty, guidance_scale=s.prior_guidance,
            steps=s.prior_steps, sampler=s.prior_sampler, best_of=s.prior_best_of, generator=gens,
        )  # fmt: skip

    with torch.no_grad():
        for _ in range(args.repeats + 1):  # the first round warms up and keeps the outputs
            for name, wrap in variants.items():
                sampling_module.CaptionCachedPrior = wrap
                if name not in results:
                    results[name] = sample()
                else:
                    best[name] = min(best[name], timed(sample, device))
    sampling_module.CaptionCachedPrior = cached_type
    a, b = (r.candidates for r in results.values())
    c = pipe.prior.config
    header = (
        f"prior of {args.model}: width {c.width}, depth {c.depth}, {c.text_len} caption positions + 4; "
        f"{s.prior_sampler} {s.prior_steps} steps, guidance {s.prior_guidance}, best of {s.prior_best_of}; "
        f"{args.batch} captions; {args.device}"
    )
    print_before_now(header, best, "call", "candidates", (a - b).abs().max().item())


if __name__ == "__main__":
    main()
