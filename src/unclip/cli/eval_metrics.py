"""``unclip eval precision-recall | diversity | clip-score``: the feature-space metrics of issue 9 on image folders.

Registered in ``unclip.cli.eval.SUBCOMMANDS``. Each prints a short text summary, or with ``--json`` one JSON object
whose ``"metric"`` names it (the files ``unclip report`` reads). Handlers import the library inside.
"""

from __future__ import annotations

import argparse


def register_metrics(sub: argparse._SubParsersAction) -> None:
    from unclip.cli.eval import _add_feature_options

    fmt = argparse.ArgumentDefaultsHelpFormatter
    pr = sub.add_parser(
        "precision-recall",
        help="improved precision and recall (Kynkäänniemi et al. 2019) on Inception features, cached as for FID",
        formatter_class=fmt,
    )
    pr.add_argument("dir_real", metavar="DIR_REAL", help="folder of real (reference) images")
    pr.add_argument("dir_fake", metavar="DIR_FAKE", help="folder of generated images")
    pr.add_argument("--k", type=int, default=3, help="k-th nearest neighbour that sets each manifold ball's radius")
    _add_feature_options(pr)
    pr.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    pr.set_defaults(func=run_precision_recall)

    dv = sub.add_parser(
        "diversity",
        help="mean pairwise distance between the samples of each prompt (Inception L2; CLIP cosine with --clip)",
        formatter_class=fmt,
    )
    dv.add_argument("dir", metavar="DIR", help="folder of images with JSON sidecars (as `unclip generate` writes)")
    dv.add_argument("--group-by", choices=("prompt", "none"), default="prompt",
                    help="'prompt': group by the sidecars' prompt; 'none': the whole folder is one group")  # fmt: skip
    dv.add_argument(
        "--clip", metavar="CLIP_DIR", help="CLIP model folder or pipeline folder: adds CLIP-space diversity"
    )
    _add_feature_options(dv)
    dv.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    dv.set_defaults(func=run_diversity)

    cs = sub.add_parser(
        "clip-score",
        help="100 x mean cosine of each image's CLIP embedding and its prompt's (prompts from the sidecars)",
        formatter_class=fmt,
    )
    cs.add_argument("dir", metavar="DIR", help="folder of images with JSON sidecars (or KEY.txt captions)")
    cs.add_argument("--clip", metavar="CLIP_DIR", required=True, help="CLIP model folder or pipeline folder")
    cs.add_argument("--batch-size", type=int, default=32, help="images per CLIP forward pass")
    cs.add_argument("--device", default="cpu", help="torch device for CLIP")
    cs.add_argument(
        "--cache-dir", help="embedding cache folder; when not given, $UNCLIP_CACHE/fid or ~/.cache/unclip/fid"
    )
    cs.add_argument("--no-cache", action="store_true", help="neither read nor write cached embeddings")
    cs.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    cs.set_defaults(func=run_clip_score)


def _cache_dir(args: argparse.Namespace):
    if args.no_cache:
        return None
    if args.cache_dir:
        return args.cache_dir
    from unclip.eval.inception import default_cache_dir

    return default_cache_dir()


def _warn(command: str, messages: list[str], skipped: list) -> None:
    import sys

    for msg in messages:
        print(f"unclip eval {command}: warning: {msg}", file=sys.stderr)
    if skipped:
        name, reason = skipped[0]
        print(f"unclip eval {command}: left out {len(skipped)} file(s), e.g. {name}: {reason}", file=sys.stderr)


def _print_json(report: dict) -> int:
    import json

    print(json.dumps(report, indent=1))
    return 0


def _load_clip(args: argparse.Namespace):
    from unclip.eval.clip_score import folder_id, load_project_clip

    clip, folder = load_project_clip(args.clip, args.device)
    return clip, str(folder), folder_id(folder)


def run_precision_recall(args: argparse.Namespace) -> int:
    from unclip.eval.folder_metrics import precision_recall_folders

    result = precision_recall_folders(
        args.dir_real, args.dir_fake, k=args.k, batch_size=args.batch_size, cache_dir=_cache_dir(args),
        device=args.device,
    )  # fmt: skip
    _warn("precision-recall", result.warnings, [])
    if args.json:
        return _print_json({"metric": "precision_recall", "dir_real": args.dir_real, "dir_fake": args.dir_fake,
                            **result.to_dict()})  # fmt: skip
    print(f"precision {result.precision:.4f}  recall {result.recall:.4f}  (k={result.k})")
    print(f"images    real: {result.n_real}  generated: {result.n_fake}  ({result.seconds:.1f} s)")
    return 0


def run_diversity(args: argparse.Namespace) -> int:
    from unclip.eval.folder_metrics import diversity_folder

    clip, clip_folder, clip_id = _load_clip(args) if args.clip else (None, None, None)
    result = diversity_folder(
        args.dir, group_by=args.group_by, clip=clip, clip_id=clip_id, batch_size=args.batch_size,
        cache_dir=_cache_dir(args), device=args.device,
    )  # fmt: skip
    _warn("diversity", result.warnings, result.skipped)
    if args.json:
        return _print_json({"metric": "diversity", "dir": args.dir, "clip_model": clip_folder, **result.to_dict()})
    print(f"diversity inception {result.inception:.4g} (mean pairwise L2)")
    if result.clip is not None:
        print(f"diversity clip      {result.clip:.4g} (mean pairwise cosine distance)")
    print(f"groups    {result.n_groups} ({result.group_by}), {result.n_images} images  ({result.seconds:.1f} s)")
    return 0


def run_clip_score(args: argparse.Namespace) -> int:
    from unclip.eval.clip_score import clip_score_folder

    clip, clip_folder, clip_id = _load_clip(args)
    result = clip_score_folder(args.dir, clip, clip_id=clip_id, batch_size=args.batch_size, cache_dir=_cache_dir(args))
    _warn("clip-score", [], result.skipped)
    if args.json:
        return _print_json({"metric": "clip_score", "dir": args.dir, "clip_model": clip_folder, **result.to_dict()})
    print(f"CLIP score {result.clip_score:.2f}  (100 x mean cosine; cosine {result.cosine_mean:.4f} ± "
          f"{result.cosine_std:.4f})")  # fmt: skip
    print(f"images     {result.n} over {result.n_prompts} prompt(s)  ({result.seconds:.1f} s)")
    return 0
