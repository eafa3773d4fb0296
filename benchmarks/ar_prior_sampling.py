"""AR prior sampling speed: incremental decoding with a key/value cache against re-running the whole prefix.

Without the cache, drawing code n runs the transformer over [caption, z_t, dot token, codes 1 .. n-1] again, so
one embedding costs O(K (L + K)) positions per layer; with it, the prefix is encoded once and each code adds one
position. Random weights (the speed does not depend on training), PCA fitted on random embeddings, the preset's
dimensions, the CPU, a batch of captions; reports seconds per embedding (best of ``--repeats``) and the ratio,
and checks both paths drew the same codes.

    python benchmarks/ar_prior_sampling.py [--presets tiny small] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from unclip.prior import AR_PRIOR_PRESETS, ARPrior, sample_ar_prior


def setup(preset: str, batch: int) -> tuple[ARPrior, torch.Tensor, torch.Tensor, torch.Tensor]:
    c = AR_PRIOR_PRESETS[preset]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    z = F.normalize(torch.randn(max(4 * c.embed_dim, 512), c.embed_dim, generator=g), dim=1)
    prior = ARPrior(c).fit_statistics(z, z.roll(1, 0)).eval()
    z_t = F.normalize(torch.randn(batch, c.embed_dim, generator=g), dim=1)
    tokens = torch.randn(batch, c.text_len, c.text_width, generator=g)
    mask = torch.arange(c.text_len)[None] < torch.randint(4, c.text_len + 1, (batch, 1), generator=g)
    return prior, z_t, tokens, mask


def seconds_per_embedding(prior: ARPrior, inputs: tuple, use_cache: bool, repeats: int) -> tuple[float, torch.Tensor]:
    best, codes = float("inf"), None
    for _ in range(repeats):
        gens = [torch.Generator().manual_seed(i) for i in range(inputs[0].shape[0])]
        start = time.perf_counter()
        out = sample_ar_prior(prior, *inputs, generator=gens, use_cache=use_cache)
        best = min(best, (time.perf_counter() - start) / inputs[0].shape[0])
        codes = out.codes
    return best, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=list(AR_PRIOR_PRESETS))
    parser.add_argument("--batch", type=int, default=8, help="captions sampled together")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"AR prior sampling on the CPU ({args.threads} thread(s), batch {args.batch}, torch {torch.__version__})")
    print(f"{'preset':8} {'params':>8} {'codes':>6} {'prefix':>7} {'cached s/emb':>13} {'uncached s/emb':>15} "
          f"{'speed-up':>9} {'same codes':>11}")  # fmt: skip
    for preset in args.presets:
        prior, *inputs = setup(preset, args.batch)
        c = prior.config
        params = sum(p.numel() for p in prior.parameters()) / 1e6
        cached, codes_c = seconds_per_embedding(prior, tuple(inputs), True, args.repeats)
        plain, codes_u = seconds_per_embedding(prior, tuple(inputs), False, args.repeats)
        print(f"{preset:8} {params:>7.2f}M {c.components:>6} {c.text_len + 2:>7} {cached:>13.4f} {plain:>15.4f} "
              f"{plain / cached:>8.1f}x {torch.equal(codes_c, codes_u)!s:>11}")  # fmt: skip


if __name__ == "__main__":
    main()
