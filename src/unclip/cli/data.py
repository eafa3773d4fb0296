"""``unclip data``: write Shapes-world datasets and the prompt suite to disk, and check a dataset before training."""

from __future__ import annotations

import argparse

from unclip.cli import arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data", help="write Shapes-world datasets, prompt suites and the emoji set; check a dataset"
    )
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
    s.add_argument("--seed", type=arguments.seed, default=0, help="dataset seed")
    s.add_argument("--start", type=int, default=0, help="index of the first sample")
    s.add_argument("--shards", action="store_true", help="write WebDataset tar shards instead of loose files")
    s.add_argument("--shard-size", type=int, default=1000, help="samples per shard (with --shards)")
    s.set_defaults(func=run_shapes)

    q = sub.add_parser(
        "prompts",
        help="write the versioned GenEval-style prompt suite (ours and GenEval's schema)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=run_prompts)

    e = sub.add_parser(
        "emoji",
        help="write OpenMoji's emoji captioned by their Unicode names (real data, offline) as train/test folders",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog='Needs pip install "unclip[emoji]". Train on it with --data folder:OUT/train and evaluate with '
        "--data folder:OUT/test (docs/training.md, \"Real data: emoji\").",
    )  # fmt: skip
    e.add_argument("--out", required=True, help="output folder (written whole or not at all)")
    e.add_argument("--size", type=int, default=64, help="image side in pixels")
    e.add_argument("--test-fraction", type=float, default=0.1, help="share of emoji held out (by a hash of the code)")
    e.add_argument("--background", default="white", help="colour behind the drawings (a name or #rrggbb)")
    e.add_argument("--template", default="{}", help='caption from the name, e.g. "an emoji of {}"')
    e.add_argument("--limit", type=int, help="only the first N emoji (by code point)")
    e.set_defaults(func=run_emoji)

    t = sub.add_parser(
        "tokenizer",
        help="train a byte-level BPE on a dataset's captions, for a CLIP trained on that data",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Use it with unclip train clip --data SPEC --set model.tokenizer=FILE; its vocabulary must fit the "
        "text tower's (model.clip.text.vocab_size, 1024 in the small presets).",
    )  # fmt: skip
    t.add_argument("spec", metavar="SPEC", help="any --data spec of training (folder:PATH, wds:..., parquet:...)")
    t.add_argument("--out", required=True, help="the tokenizer.json to write")
    t.add_argument("--vocab-size", type=int, default=1024, help="tokens at most, the 3 special ones included")
    t.add_argument("--n", type=int, help="train on the first N captions (default: all; required for shapes)")
    t.set_defaults(func=run_tokenizer)

    c = sub.add_parser(
        "check",
        help="read a dataset as training will and report what is usable, image sizes and caption lengths",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    c.add_argument(
        "spec", metavar="SPEC", help="any --data spec of training: folder:PATH, wds:..., parquet:..., a path"
    )
    c.add_argument("--n", type=int, help="check only the first N records (default: all; required for shapes)")
    c.add_argument("--resolution", type=int, default=64, help="training resolution: count images smaller than it")
    c.add_argument("--clip", help="a CLIP (or pipeline) folder: count captions longer than its context")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    c.set_defaults(func=run_check)


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

    from unclip.data.shapes.export import GENEVAL_METADATA, write_prompts
    from unclip.data.shapes.prompts import PROMPT_SUITE, PROMPT_SUITE_VERSION

    path = write_prompts(PROMPT_SUITE, Path(args.out))
    print(f"wrote {len(PROMPT_SUITE)} prompts of {PROMPT_SUITE_VERSION} to {path} (and in GenEval's schema to "
          f"{path.with_name(GENEVAL_METADATA)})")  # fmt: skip
    return 0


def run_emoji(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from unclip.data.emoji import list_emoji, write_emoji_dataset

    total = len(list_emoji()[: args.limit])
    with tqdm(total=total, unit="img", disable=None, file=sys.stderr, desc="emoji") as bar:
        counts = write_emoji_dataset(args.out, size=args.size, test_fraction=args.test_fraction,
                                     background=args.background, template=args.template, limit=args.limit,
                                     progress=bar.update)  # fmt: skip
    print(f"wrote {counts['train']} training and {counts['test']} test emoji at {args.size} px to {args.out} "
          f"(folder:{args.out}/train, folder:{args.out}/test)")  # fmt: skip
    return 0


def run_tokenizer(args: argparse.Namespace) -> int:
    import statistics

    from unclip.atomic import atomic_file
    from unclip.clip.tokenizer import shapes_tokenizer, tokenizer_from_data

    tok, captions = tokenizer_from_data(args.spec, args.vocab_size, args.n)
    with atomic_file(args.out) as tmp:
        tok.hf.save(str(tmp))
    sample = captions[:2000]
    mean = {name: statistics.fmean(len(t.hf.encode(c).ids) for c in sample)
            for name, t in (("this tokenizer", tok), ("shapes-bpe", shapes_tokenizer(args.vocab_size)))}  # fmt: skip
    print(f"wrote {args.out}: {tok.vocab_size} tokens from {len(captions)} captions; tokens per caption "
          + ", ".join(f"{m:.1f} ({name})" for name, m in mean.items()))  # fmt: skip
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Exit 0 when some record is usable, 1 when none is (a dataset training could not use)."""
    import json

    from unclip.data.check import check_data, format_report

    clip = None
    if args.clip:
        from unclip.eval.clip_eval import load_eval_clip

        clip = load_eval_clip(args.clip)
    report = check_data(args.spec, n=args.n, resolution=args.resolution, clip=clip, progress=True)
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    return 0 if report.usable else 1
