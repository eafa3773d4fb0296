"""``unclip export | embed | assemble``: from training runs to model folders to one pipeline folder."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    e = subparsers.add_parser(
        "export", help="a training run's newest checkpoint (or --step N's) as a model folder", formatter_class=fmt
    )
    e.add_argument("run", help="run folder (config.json, checkpoints/)")
    e.add_argument("--out", required=True, help="model folder to write")
    e.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")
    e.add_argument("--step", type=int, help="export this step's checkpoint (default: the newest valid one)")
    e.set_defaults(func=run_export)

    m = subparsers.add_parser(
        "embed", help="CLIP embeddings of a dataset, for prior training", formatter_class=fmt,
        epilog="Started by torchrun, each process embeds a contiguous part of the data on its own GPU (--device cuda "
        "means cuda:LOCAL_RANK) and the main process merges the parts: the folder one process writes. Tar and "
        "Parquet data are split by whole files, so --n is refused there. E.g. torchrun --nproc_per_node 8 -m "
        "unclip.cli.main embed --model CLIP --data wds:shards/{000..999}.tar --device cuda --out emb",
    )  # fmt: skip
    m.add_argument("--model", required=True, help="CLIP model folder")
    m.add_argument(
        "--data",
        required=True,
        help="shapes[:split=S,seed=N,relations=P] | folder:PATH[,caption=COLUMN] | wds:PATTERN | parquet:PATTERN | "
        "a path",
    )
    m.add_argument("--out", required=True, help="embedding folder to write")
    m.add_argument("--n", "--num-pairs", dest="n", type=int,
                   help="at most this many pairs (required for shapes; --num-pairs under torchrun)")  # fmt: skip
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--device", default="cpu")
    m.add_argument("--workers", type=int, default=0, help="processes that read and decode (0: the main one)")
    m.add_argument("--shard-size", type=int, default=50_000,
                   help="pairs a shard; memory holds one shard's pairs while embedding")  # fmt: skip
    m.set_defaults(func=run_embed)

    a = subparsers.add_parser("assemble", help="model folders → one pipeline folder", formatter_class=fmt)
    a.add_argument("--from", dest="base", metavar="DIR",
                   help="start from this pipeline folder's parts and settings; the options below replace or add "
                   "parts (its float16 parts are written in float32 unless --half)")  # fmt: skip
    a.add_argument("--clip", help="CLIP model folder (required without --from)")
    a.add_argument("--prior", help="prior model folder, diffusion or AR (required without --from)")
    a.add_argument("--decoder", help="decoder model folder (required without --from)")
    a.add_argument("--upsampler", action="append", default=[],
                   help="upsampler model folder (repeat, in order; with --from they replace its own)")  # fmt: skip
    a.add_argument("--noised-clip", help="noise-aware CLIP tower (`unclip train noised_clip`) for the "
                   "decoder_embedding_guidance_gradient=noised setting (optional)")  # fmt: skip
    a.add_argument("--out", required=True, help="pipeline folder to write")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a default sampling setting")
    a.add_argument("--half", action="store_true", help="store the parameters in float16 (half the size)")
    a.set_defaults(func=run_assemble)


def run_export(args: argparse.Namespace) -> int:
    from unclip.train.export import export_run

    folder = export_run(args.run, args.out, ema=not args.raw, step=args.step)
    which = "the newest checkpoint" if args.step is None else f"step {args.step}"
    print(f"exported {'raw' if args.raw else 'EMA'} weights of {args.run} ({which}) to {folder}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from unclip.data.embed import embed_dataset
    from unclip.pipeline.sharding import process_device, process_shard, world_from_environment

    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    _, _, local_rank = world_from_environment()
    with process_shard() as shard:  # under torchrun: one part of the data per process (GPU)
        folder, n, skipped = embed_dataset(
            args.model,
            args.data,
            args.out,
            limit=args.n,
            batch_size=args.batch_size,
            device=process_device(args.device, local_rank),
            workers=args.workers,
            shard_size=args.shard_size,
            shard=shard,
        )
        if shard.is_main:
            processes = f" by {shard.world_size} processes" if shard.world_size > 1 else ""
            print(f"wrote {n} embedding pairs to {folder}{processes} ({skipped} samples skipped)")
    return 0


def run_assemble(args: argparse.Namespace) -> int:
    import dataclasses

    from unclip.clip import load_clip
    from unclip.clip.noised import NoisedImageEncoder
    from unclip.model_folder import config_from_dict
    from unclip.models.checkpoint import from_pretrained as load_image_model
    from unclip.pipeline import SamplingSettings, UnCLIPPipeline
    from unclip.pipeline.settings import parse_overrides
    from unclip.prior import from_pretrained as load_prior

    parts: dict[str, Any] = {"upsamplers": [], "noised_clip": None}
    settings = SamplingSettings()
    if args.base is not None:
        base = UnCLIPPipeline.from_pretrained(args.base)
        parts = {"clip": base.clip, "prior": base.prior, "decoder": base.decoder, "upsamplers": base.upsamplers,
                 "noised_clip": base.noised_clip}  # fmt: skip
        settings = base.settings
    loaders = {"clip": load_clip, "prior": load_prior, "decoder": lambda d: load_image_model(d, "decoder")}
    for name, load in loaders.items():
        if getattr(args, name) is not None:
            parts[name] = load(getattr(args, name))
    missing = [f"--{name}" for name in loaders if name not in parts]
    if missing:
        raise ValueError(f"assemble needs {', '.join(missing)} (or --from PIPELINE_DIR to take the parts from)")
    if args.upsampler:
        parts["upsamplers"] = [load_image_model(u, "upsampler") for u in args.upsampler]
    if args.noised_clip is not None:
        parts["noised_clip"] = NoisedImageEncoder.from_pretrained(args.noised_clip)
    values = dataclasses.asdict(settings)
    values.update(parse_overrides(args.set, settings))
    settings = config_from_dict(SamplingSettings, values, "settings", error=ValueError)
    pipe = UnCLIPPipeline(**parts, settings=settings)
    folder = pipe.save_pretrained(args.out, half=args.half)
    print(f"assembled {folder} ({pipe.resolution} px)")
    return 0
