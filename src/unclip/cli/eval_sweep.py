"""``unclip eval sweep``: a model's samples over a grid of sampling settings → ``sweep.json`` for ``unclip report``."""

from __future__ import annotations

import argparse


def register_sweep(sub: argparse._SubParsersAction) -> None:
    from unclip.cli.eval import _model_options

    p = sub.add_parser(
        "sweep",
        help="FID, CLIP score, diversity and the judge over a grid of sampling settings (sweep.json)",
        description="Generate the prompt suite at every combination of the --vary settings (same prompts and "
        "seeds at each) and score it: FID against real test images, CLIP score, diversity between the samples of "
        "one prompt, the compositional judge, and seconds per image. Rows go to OUT/sweep.json as they finish.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--vary", action="append", default=[], metavar="KEY=V1,V2,...",
        help="a sampling setting and its values (repeatable; the grid is their product), e.g. "
        "decoder_guidance=1,3,5 (both decoder scales), decoder_sampler=ddpm,ddim, decoder_steps=10,50, "
        "z_source=prior,text",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="run folder for sweep.json (a run folder for unclip report)")
    p.add_argument("--label", help="a name stored in every row (e.g. the model's)")
    p.add_argument("--per-category", type=int, default=2, help="suite prompts per category")
    p.add_argument("--images-per-prompt", type=int, default=4, help="seeds per prompt (>= 2 for diversity)")
    p.add_argument("--base-only", action="store_true", help="score the decoder's images (skip the upsamplers)")
    p.add_argument("--reference-n", type=int, default=500, help="real test images for the FID reference")
    p.add_argument("--judge-clip", help="CLIP folder for CLIP score and diversity (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=16, help="images per pipeline call")
    p.add_argument("--cache-dir", help="reference-feature cache; default: $UNCLIP_CACHE/fid or ~/.cache/unclip/fid")
    _model_options(p)
    p.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from unclip.cli.generate import load_pipeline
    from unclip.eval import sweep
    from unclip.eval.inception import default_cache_dir

    if args.per_category < 1 or args.images_per_prompt < 1 or args.reference_n < 2:
        raise ValueError("--per-category and --images-per-prompt must be >= 1 and --reference-n >= 2")
    args.decoder_steps = None
    pipe, folder = load_pipeline(args)
    grid = sweep.parse_grid(args.vary, pipe.settings)
    judge_clip = None
    if args.judge_clip:
        from unclip.eval.clip_score import load_project_clip

        judge_clip, _ = load_project_clip(args.judge_clip, args.device)  # (clip, its folder)
    rows = sweep.run_sweep(
        pipe, grid, per_category=args.per_category, images_per_prompt=args.images_per_prompt, seed=args.seed,
        batch_size=args.batch_size, base_only=args.base_only, reference_n=args.reference_n, judge_clip=judge_clip,
        cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(), out=Path(args.out),
        label=args.label,
    )  # fmt: skip
    if args.json:
        print(json.dumps({"metric": "sweep", "model": folder, "rows": rows}, indent=2))
        return 0
    keys = [k for k in rows[0] if k not in ("images", "resolution", "label")]
    print("  ".join(f"{k:>12}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]:>12.4g}" if isinstance(row[k], float) else f"{row[k]!s:>12}" for k in keys))
    print(f"wrote {Path(args.out) / sweep.SWEEP_FILE}")
    return 0
