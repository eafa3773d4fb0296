"""``unclip report``: gather the JSON results of evaluation runs into report.md / report.html with plots."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables and plots (guidance and sampler sweeps) from run folders of `unclip eval ... --json` files",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Each RUN_DIR holds *.json metric files as printed by `unclip eval METRIC --json` and optionally "
        'sweep.json, a list of rows such as {"guidance": 3.0, "fid": 21.4, "clip_score": 27.1, "diversity": '
        '0.31, "sampler": "ddim", "steps": 50, "seconds": 12.5} (docs/eval.md).',
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="folders of JSON results, one per run")
    p.add_argument("--out", required=True, help="folder for report.md, report.html and the PNG plots (replaced)")
    p.add_argument("--title", default="unclip evaluation report", help="the page's title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unclip.eval.report import write_report

    report = write_report(args.run_dirs, args.out, title=args.title)
    for note in report.notes:
        print(f"unclip report: not drawn: {note}")
    n_metrics = sum(len(rows) for _, rows in report.tables.values())
    print(
        f"wrote report.md, report.html and {len(report.plots)} plot(s) to {report.out} "
        f"({len(report.runs)} run(s), {n_metrics} metric file(s), {len(report.sweep[1])} sweep row(s))"
    )
    return 0
