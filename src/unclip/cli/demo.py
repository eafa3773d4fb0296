"""``unclip demo``: the main job on the bundled default model (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

from unclip.cli import arguments
from unclip.cli.generate import add_pipeline_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="a gallery from the bundled Shapes-world model: text to image, variations, interpolation, text diff, "
        "probing",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="outputs/demo", help="folder for index.html and its images")
    p.add_argument("--model", help="model folder (pipeline.json); default: the bundled Shapes-world model")
    p.add_argument("--per-category", type=int, default=2, help="suite prompts per category")
    p.add_argument("--seed", type=arguments.seed, default=0)
    p.add_argument("--device", default="cpu")
    add_pipeline_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from importlib import resources

    if args.model is None and not (resources.files("unclip") / "assets" / "shapes-model" / "pipeline.json").is_file():
        print(
            "unclip demo: the bundled Shapes-world model is not trained yet (issue 8), so there is nothing to "
            "sample.\nTrain a stack yourself: scripts/train_shapes_model.sh OUT (a GPU is advised; "
            "UNCLIP_PROFILE=mini trains a small one on 2 CPU cores in about 1.5 hours), then\n"
            "  unclip demo --model OUT/model"
        )
        return 0
    from unclip.cli.generate import load_pipeline
    from unclip.eval.gallery import build_gallery

    args.decoder_steps = None
    pipe, folder = load_pipeline(args)
    report = build_gallery(pipe, args.out, per_category=args.per_category, seed=args.seed, model_dir=folder)
    scores = ", ".join(f"{k} {v:.2f}" for k, v in report["scores"].items())
    print(f"gallery: {args.out}/index.html ({report['seconds']:.0f} s)\njudge scores: {scores}")
    return 0
