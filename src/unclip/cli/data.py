"""``unclip data``: write Shapes-world datasets and the prompt suite to disk."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="write Shapes-world datasets and prompt suites")
    sub = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)

    s = sub.add_parser(
        "shapes",
        help="write Shapes-world samples as KEY.png / KEY.txt / KEY.json (or tar shards)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--res", type=int, default=64, help="resolution in pixels (32 to 1024)")
    s.add_argument("--split", default="train", choices=("train", "val", "test", "heldout"), help="split")
    s.add_argument("--seed", type=int, default=0, help="dataset seed")
    s.add_argument("--start", type=int, default=0, help="index of the first sample")
    s.add_argument("--shards", action="store_true", help="write WebDataset tar shards instead of loose files")
    s.add_argument("--shard-size", type=int, default=1000, help="samples per shard (with --shards)")
    s.set_defaults(func=run_shapes)

    q = sub.add_parser(
        "prompts",
        help="write the versioned GenEval-style prompt suite",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=run_prompts)


def run_shapes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from unclip.data.shapes import ShapesWorld
    from unclip.data.shapes.export import write_folder, write_shards

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.start < 0:
        raise ValueError(f"--start must be >= 0, got {args.start}")
    world = ShapesWorld(split=args.split, seed=args.seed, resolution=args.res)
    out = Path(args.out)
    with tqdm(total=args.n, unit="img", disable=None) as bar:
        if args.shards:
            paths = write_shards(world, out, args.n, args.shard_size, args.start, bar.update)
            print(f"wrote {args.n} samples in {len(paths)} shards to {out}")
        else:
            write_folder(world, out, args.n, args.start, bar.update)
            print(f"wrote {args.n} samples to {out}")
    return 0


def run_prompts(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unclip.data.shapes.export import write_prompts
    from unclip.data.shapes.prompts import PROMPT_SUITE, PROMPT_SUITE_VERSION

    path = write_prompts(PROMPT_SUITE, Path(args.out))
    print(f"wrote {len(PROMPT_SUITE)} prompts of {PROMPT_SUITE_VERSION} to {path}")
    return 0
