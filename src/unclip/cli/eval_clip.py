"""``unclip eval clip``: zero-shot retrieval and attribute binding of a CLIP on Shapes world (issue 5).

Registered in ``unclip.cli.eval.SUBCOMMANDS``; the library work is ``unclip.eval.clip_eval.clip_eval``.
"""

from __future__ import annotations

import argparse

from unclip.cli import arguments

KIND_LABELS = {"swap": "swapped colours", "colour": "one colour", "shape": "one shape", "count": "one count",
               "relation": "one relation"}  # fmt: skip


def register_clip(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clip",
        help="CLIP retrieval R@1/R@5 and binding accuracy on seen and held-out Shapes-world compositions",
        description="Zero-shot retrieval (image→text, text→image; a retrieved caption or image is correct when "
        "the caption is true of the image's scene graph) and binding accuracy (true caption against a distractor "
        "with swapped colours, or one colour, shape, count or relation changed; chance 0.5), on the test split "
        "and on the held-out compositions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, help="CLIP model folder (unclip or transformers format) or a pipeline folder"
    )
    p.add_argument("--n", type=int, default=1000, help="image-caption pairs per split")
    p.add_argument(
        "--data",
        help="evaluate retrieval on these held-out pairs instead (any --data spec of training: a folder, tar "
        "shards, Parquet); a caption counts as correct when it equals the image's own",
    )
    p.add_argument("--seed", type=arguments.seed, default=0, help="Shapes-world seed (which scenes, which distractors)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--batch-size", type=int, default=64, help="images or captions per forward pass")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run_clip)


def run_clip(args: argparse.Namespace) -> int:
    import json

    from unclip.eval.clip_eval import clip_eval

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    result = clip_eval(
        args.model, n=args.n, seed=args.seed, device=args.device, batch_size=args.batch_size, progress=True,
        data=args.data,
    )  # fmt: skip
    table = format_data_table if "data" in result else format_table
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


def _cell(value: float | None, n: int | None = None) -> str:
    text = "   -  " if value is None else f"{value:.3f}"
    return f"{text} (n={n})".ljust(15) if n is not None else text.ljust(15)


def format_data_table(result: dict) -> str:
    """The result of ``clip_eval(..., data=SPEC)``: retrieval on the user's pairs, next to chance."""
    d = result["data"]
    lines = [f"CLIP {result['model']}: {d['n']} pairs of {d['split']} ({d['skipped']} skipped), "
             f"{result['seconds']:.1f} s", f"{'':<34}{'score':<15}{'chance':<15}"]  # fmt: skip
    for direction, label in (("image_to_text", "image→text"), ("text_to_image", "text→image")):
        for k in ("R@1", "R@5"):
            r = d["retrieval"][direction]
            lines.append(f"{'retrieval ' + label + ' ' + k:<34}{_cell(r[k])}{_cell(r['chance'][k])}")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """The result of ``clip_eval`` as a readable table: one column per split."""
    cols = ("seen", "held_out")
    lines = [
        f"CLIP {result['model']}: {result['n']} pairs per split, seed {result['seed']}, {result['seconds']:.1f} s",
        f"{'':<34}{'seen (test)':<15}{'held-out':<15}{'chance (seen)':<15}",
    ]
    for direction, label in (("image_to_text", "image→text"), ("text_to_image", "text→image")):
        for k in ("R@1", "R@5"):
            r = [result[c]["retrieval"][direction] for c in cols]
            lines.append(
                f"{'retrieval ' + label + ' ' + k:<34}{_cell(r[0][k])}{_cell(r[1][k])}{_cell(r[0]['chance'][k])}"
            )
    kinds = [k for k in KIND_LABELS if k in result["seen"]["binding"]["n"]]
    for kind in kinds:
        b = [result[c]["binding"] for c in cols]
        lines.append(
            f"{'binding ' + KIND_LABELS[kind]:<34}{_cell(b[0][kind], b[0]['n'][kind])}"
            f"{_cell(b[1][kind], b[1]['n'][kind])}{_cell(0.5)}"
        )
        axes = [result[c].get("relation_binding_by_axis") for c in cols]
        for axis, label in (("x", "left/right"), ("y", "above/below")) if kind == "relation" and axes[0] else ():
            lines.append(f"{'  relation, ' + label:<34}{_cell(axes[0][axis], axes[0]['n'][axis])}"
                         f"{_cell(axes[1][axis], axes[1]['n'][axis])}{_cell(0.5)}")  # fmt: skip
    for stat in ("mean", "min"):
        lines.append(f"{'binding ' + stat:<34}{_cell(result['seen']['binding'][stat])}"
                     f"{_cell(result['held_out']['binding'][stat])}")  # fmt: skip
    probe = [result[c].get("swap_probe") for c in cols]
    if probe[0] is not None:  # where binding is lost (unclip.eval.binding_probe)
        chance = probe[0]["chance"]
        keys = ("image_cosine", "text_cosine", "alignment", "text_score", "image_score", "group_score")
        for key in keys + (("image_decodability",) if "image_decodability" in probe[0] else ()):
            lines.append(f"{'swap probe ' + key:<34}{_cell(probe[0][key])}{_cell(probe[1][key])}"
                         f"{_cell(chance[key]) if key in chance else ''}")  # fmt: skip
        relation = [p.get("relation") for p in probe]
        keys = ("text_cosine", "converse_score", "alignment", "group_score", "image_decodability")
        for key in keys if relation[0] else ():
            if key in relation[0]:
                lines.append(f"{'relation probe ' + key:<34}{_cell(relation[0][key])}{_cell(relation[1][key])}"
                             f"{_cell(chance[key]) if key in chance else ''}")  # fmt: skip
    lines.append("reference (ARO relation/attribution): OpenAI CLIP ~0.6, NegCLIP ~0.7-0.8")
    return "\n".join(lines)
