"""``unclip demo``: the main job on the bundled default model (what ``make demo`` runs)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the main job on the bundled Shapes-world model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="out/demo", help="folder for the demo's images")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from importlib import resources

    model = resources.files("unclip") / "assets" / "shapes-model"
    if not model.is_dir():
        print(
            "unclip demo: the bundled Shapes-world model is not trained yet (issue 8), so there is nothing to "
            "sample.\nTrain a stack yourself (a GPU is advised): scripts/train_shapes_model.sh OUT, then\n"
            '  unclip generate "a red circle to the left of a blue square" --model OUT/model --out outputs/gen'
        )
        return 0
    raise NotImplementedError("the bundled-model demo arrives with the pipeline (issue 8)")
