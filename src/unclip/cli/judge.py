"""``unclip judge``: score a folder of images against their scene graphs or prompt requirements."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "judge",
        help="judge KEY.png images against KEY.json (scene graph or prompt), or a folder in GenEval's layout, in "
        "the six GenEval categories",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "dir", help="folder of KEY.png + KEY.json pairs, or GenEval's 00000/metadata.jsonl + samples/0000.png"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from unclip.data.shapes.export import images_to_judge, judge_folder

    folder = Path(args.dir)
    total = len(images_to_judge(folder)) if folder.is_dir() else 0
    with tqdm(total=total, unit="img", disable=None, file=sys.stderr) as bar:
        report = judge_folder(folder, bar.update)
    for skip in report["skipped"]:
        print(f"unclip judge: skipped {skip['file']}: {skip['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for cat, r in report["categories"].items():
            print(f"{cat:20s} {r['accuracy']:.3f}  (n={r['n']})")
        overall = "n/a" if report["overall"] is None else f"{report['overall']:.3f}"
        print(f"{'overall':20s} {overall}  ({report['judged']} judged, {len(report['skipped'])} skipped)")
    return 0
