"""``unclip eval paired A.json B.json``: two judged evaluations of the same scenes and seeds compared scene by
scene (McNemar's exact test, :mod:`unclip.eval.paired`). Registered in ``unclip.cli.eval.SUBCOMMANDS``."""

from __future__ import annotations

import argparse


def register_paired(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "paired",
        help="compare two judged runs (eval decoder, compositional or manipulations --json) scene by scene",
        description="Per category: the scenes both runs judged, each run's accuracy, the scenes only one of them got "
        "right and McNemar's exact p. The runs must be of the same scenes and seeds (same --n, --seed).",
    )
    p.add_argument("a", metavar="A.json", help="a result of `unclip eval decoder|compositional|manipulations --json`")
    p.add_argument("b", metavar="B.json", help="another, of the same scenes and seeds")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_paired)


def run_paired(args: argparse.Namespace) -> int:
    import json

    from unclip.eval.paired import format_tables, paired_tables

    tables = paired_tables(args.a, args.b)
    print(json.dumps(tables, indent=2) if args.json else format_tables(tables))
    return 0
