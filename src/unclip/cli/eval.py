"""``unclip eval``: metrics as commands, each with ``--json`` (issues 7 and 9).

Subcommands register themselves in ``SUBCOMMANDS``: to add one (``decoder``, ``prior``, ``clip`` …), write a
``_register_NAME(sub)`` that adds its parser with ``func`` set to a handler, and append it to the tuple. Handlers
import the library inside, so ``unclip --help`` stays free of torch.
"""

from __future__ import annotations

import argparse
import dataclasses

from unclip.cli import arguments
from unclip.cli.eval_clip import register_clip
from unclip.cli.eval_metrics import register_metrics
from unclip.cli.eval_paired import register_paired
from unclip.cli.eval_prior import register_prior
from unclip.cli.eval_sweep import register_sweep
from unclip.cli.generate import add_pipeline_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluation metrics (FID, ...); each subcommand prints a table or --json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = p.add_subparsers(dest="eval_command", metavar="METRIC")
    for add in SUBCOMMANDS:
        add(sub)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32, help="images per Inception forward pass")
    p.add_argument("--device", default="cpu", help="torch device for the Inception network")
    p.add_argument("--cache-dir", help="feature cache folder; when not given, $UNCLIP_CACHE/fid or ~/.cache/unclip/fid")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")


def _register_fid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fid",
        help="FID between two folders of images (Inception-v3 FID weights, features cached)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dir_a", metavar="DIR_A", help="folder of images (e.g. the real ones)")
    p.add_argument("dir_b", metavar="DIR_B", help="folder of images (e.g. the samples)")
    _add_feature_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_fid)


def run_fid(args: argparse.Namespace) -> int:
    import json
    import sys
    import time
    import warnings

    from unclip.eval.fid import fid_folders

    cache_dir = None if args.no_cache else (args.cache_dir or "default")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below from the result, once each
        result = fid_folders(
            args.dir_a, args.dir_b, batch_size=args.batch_size, cache_dir=cache_dir, device=args.device
        )
    seconds = time.perf_counter() - start
    for msg in result.warnings:
        print(f"unclip eval fid: warning: {msg}", file=sys.stderr)
    report = {"metric": "fid", "dir_a": args.dir_a, "dir_b": args.dir_b, **result.to_dict(), "seconds": seconds}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    speed = "" if result.images_per_second is None else f", {result.images_per_second:.1f} img/s"
    cached = [name for name, hit in (("A", result.cached_a), ("B", result.cached_b)) if hit]
    print(f"FID {result.fid:.4f}")
    print(
        f"images  A: {result.n_a} ({len(result.skipped_a)} skipped)  B: {result.n_b} ({len(result.skipped_b)} skipped)"
    )
    print(
        f"time    {seconds:.1f} s (features {result.seconds_features:.1f} s{speed}; "
        f"distance {result.seconds_distance:.2f} s; cached: {', '.join(cached) or 'none'})"
    )
    return 0


# The ``unclip eval`` subcommands, in the order ``--help`` lists them.
def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model folder (pipeline.json); default: the bundled Shapes-world model")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=arguments.seed, default=0, help="seed of the first image")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_pipeline_options(p)


def _register_generation(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    c = sub.add_parser(
        "compositional", help="the Shapes-world prompt suite, judged (GenEval-style)", formatter_class=fmt
    )
    c.add_argument("--per-category", type=int, help="prompts per category (default: all 120)")
    c.add_argument("--images-per-prompt", type=int, default=4)
    _model_options(c)
    c.set_defaults(func=run_generation, evaluation="compositional")
    d = sub.add_parser("decoder", help="reconstruction faithfulness of held-out scenes, judged", formatter_class=fmt)
    d.add_argument("--n", type=int, default=200, help="held-out scenes")
    d.add_argument("--no-fid", action="store_true", help="skip FID and KID of reconstructions vs sources")
    d.add_argument("--data", help="reconstruct these held-out images instead of Shapes-world scenes (a --data spec)")
    _model_options(d)
    d.set_defaults(func=run_generation, evaluation="decoder")
    u = sub.add_parser("upsampler", help="PSNR / SSIM of the upsampler(s) against bicubic", formatter_class=fmt)
    u.add_argument("--n", type=int, default=64, help="held-out images")
    u.add_argument("--no-fid", action="store_true", help="skip FID and KID (upsampler and bicubic vs truth)")
    u.add_argument("--data", help="upsample these held-out images instead of Shapes-world scenes (a --data spec)")
    _model_options(u)
    u.set_defaults(func=run_generation, evaluation="upsampler")
    pr = sub.add_parser(
        "probing", help="decodes of z_i rebuilt from its top-k PCA components, judged per k (§4)", formatter_class=fmt
    )
    pr.add_argument("--n", type=int, default=24, help="held-out scenes")
    pr.add_argument("--dims", default="1,2,4,8,16,32,all", help="principal components kept; all: z_i itself")
    pr.add_argument("--pca-data", default="shapes:split=train", help="images the PCA is fitted on (a --data spec)")
    pr.add_argument("--pca-n", type=int, default=5000, help="embeddings the PCA is fitted on (cached)")
    pr.add_argument("--data", help="held-out images of your own data instead of Shapes-world scenes (a --data spec)")
    _model_options(pr)
    pr.set_defaults(func=run_generation, evaluation="probing")
    m = sub.add_parser(
        "manipulations", help="§3 variations and text diffs, judged (issue 8 rates)", formatter_class=fmt
    )
    m.add_argument("--n", type=int, default=50, help="source images for each manipulation")
    m.add_argument("--per-image", type=int, default=2, help="variations per source image")
    m.add_argument("--max-theta", type=float, default=0.5, help="text-diff slerp angle of the judged frame")
    m.add_argument("--eta", type=float, default=1.0, help="DDIM eta of the variations (0 reconstructs the source)")
    m.add_argument(
        "--min-change", type=float, default=0.02, help="mean absolute pixel change ([0, 1] units) a variation needs"
    )
    _model_options(m)
    m.set_defaults(func=run_generation, evaluation="manipulations")
    ip = sub.add_parser(
        "inpainting", help="inpainting edits and repairs of held-out scenes, judged, against baselines",
        formatter_class=fmt,
    )  # fmt: skip
    ip.add_argument("--n", type=int, default=32, help="held-out two-object scenes")
    ip.add_argument("--resample", type=int, help="RePaint's resamplings per block (default: the model's setting)")
    ip.add_argument("--jump", type=int, help="RePaint's block length (default: the model's setting)")
    ip.add_argument("--runs", nargs="+", default=["edit", "repair", "edit_replacement", "text_to_image"],
                    metavar="RUN", help="what to measure: edit repair edit_replacement text_to_image")  # fmt: skip
    _model_options(ip)
    ip.set_defaults(func=run_generation, evaluation="inpainting")
    a = sub.add_parser(
        "all", help="every evaluation of a model, one JSON file each under --out (for unclip report)",
        formatter_class=fmt,
    )  # fmt: skip
    a.add_argument("--out", required=True, help="folder for METRIC.json files (a run folder for unclip report)")
    a.add_argument(
        "--size", choices=("quick", "full"), default="quick", help="quick: minutes on a CPU; full: the issues' sizes"
    )
    a.add_argument(
        "--only",
        nargs="+",
        metavar="METRIC",
        help="clip prior compositional decoder upsampler manipulations probing inpainting",
    )
    a.add_argument(
        "--data", help="held-out pairs of your own data instead of the Shapes world (clip, prior, decoder, upsampler)"
    )
    a.add_argument(
        "--train-data",
        help="with --data: the pool of the prior's nearest-caption baseline and the probing PCA's images",
    )
    _model_options(a)
    a.set_defaults(func=run_generation, evaluation="all")


def run_generation(args: argparse.Namespace) -> int:
    import json

    from unclip.cli.generate import load_pipeline
    from unclip.eval import generation

    args.decoder_steps = None
    pipe, folder = load_pipeline(args)
    if args.evaluation == "all":
        from unclip.eval.evaluate_all import METRICS, evaluate_all

        only = tuple(args.only or METRICS)
        results = evaluate_all(pipe, folder, args.out, size=args.size, seed=args.seed, only=only, data=args.data,
                               train_data=args.train_data)  # fmt: skip
        if args.json:
            print(json.dumps(results, indent=2))
        return 0
    if args.evaluation == "compositional":
        result = generation.compositional(
            pipe,
            per_category=args.per_category,
            images_per_prompt=args.images_per_prompt,
            seed=args.seed,
            progress=True,
        )
    elif args.evaluation == "probing":
        from unclip.eval.probing_eval import probing_curve
        from unclip.pipeline.probing import embedding_pca, parse_dims

        dims = parse_dims(args.dims)
        pca = embedding_pca(pipe, folder, spec=args.pca_data, n=args.pca_n, progress=True)
        result = probing_curve(pipe, pca, dims, n=args.n, seed=args.seed, data=args.data, progress=True)
        result["pca_data"] = args.pca_data
    elif args.evaluation == "manipulations":
        from unclip.eval.manipulations import manipulations

        result = manipulations(
            pipe, n=args.n, per_image=args.per_image, max_theta=args.max_theta, eta=args.eta,
            min_change=args.min_change, seed=args.seed,
        )  # fmt: skip
    elif args.evaluation == "inpainting":
        from unclip.eval.inpainting import inpainting_rates

        result = inpainting_rates(pipe, n=args.n, seed=args.seed, resample=args.resample, jump=args.jump,
                                  runs=tuple(args.runs), progress=True)  # fmt: skip
    else:
        from unclip.eval.inception import InceptionFeatures

        features = None if args.no_fid else InceptionFeatures()
        evaluate = generation.decoder_reconstruction if args.evaluation == "decoder" else generation.upsampler_fidelity
        result = evaluate(pipe, n=args.n, seed=args.seed, features=features, data=args.data)
    result["model"] = folder
    result["settings"] = dataclasses.asdict(pipe.settings)  # what produced the figures, --set overrides included
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if key == "rows":  # probing: one line per number of components
                for row in value:
                    cells = "  ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float))
                    print(f"  dims {row['dims']!s:<5} {cells}")
            elif key == "categories":
                for cat, v in value.items():
                    print(f"  {cat:<20} {v['accuracy']:.3f}  (n={v['n']})")
            elif key in ("edit", "repair", "edit_replacement", "text_to_image"):  # inpainting
                cats = "  ".join(f"{c} {v:.3f}" for c, v in value["categories"].items())
                print(f"{key}: rate {value['rate']:.3f}  ({value['seconds_per_image']:.1f} s/image)  {cats}")
            elif key in ("variations", "text_diffs"):
                print(
                    f"{key}: rate {value['rate']:.3f}  "
                    + "  ".join(f"{k} {v:.3f}" for k, v in value.items() if k != "rate" and isinstance(v, float))
                )
            elif not isinstance(value, dict):
                print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


SUBCOMMANDS = (
    _register_fid, _register_generation, register_clip, register_prior, register_metrics, register_sweep,
    register_paired,
)  # fmt: skip
