"""``unclip train STAGE``: train any stage through the one engine (``unclip.train``)."""

from __future__ import annotations

import argparse

from unclip.cli import arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a stage: clip, lit, diffusion_prior, ar_prior, decoder, upsampler, noised_clip (see --list)",
        description=(
            "Train STAGE from a named preset. Runs on one CPU or GPU as is, and on many processes or nodes "
            "under `accelerate launch` or `torchrun` with the same options. Options left out keep the preset's "
            "values (or, with --resume, the run folder's)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("stage", nargs="?", help="stage name (see --list)")
    p.add_argument("--preset", help="preset name (default: the stage's first)")
    p.add_argument(
        "--data",
        help="shapes[:split=S,seed=N,relations=P] | folder:PATH[,caption=COLUMN] (.txt files or metadata.jsonl/csv) | "
        "wds:PATH/{000..009}.tar | parquet:PATTERN[,caption=COLUMN][,image=COLUMN] | a path; priors: "
        "embeddings:DIR (no images; the default when model.embeddings is set)",
    )
    p.add_argument("--out", help="run folder: config.json, metrics.jsonl, checkpoints/, samples/")
    p.add_argument("--steps", type=int, help="optimizer steps in total")
    p.add_argument("--batch-size", type=int, help="global batch per step (all processes, all accumulation)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--grad-accum", type=int, help="micro-batches accumulated per step on each process")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), help="autocast precision (GPU)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="channels-last (NHWC) weights and images for the convolutional stages (GPU)")  # fmt: skip
    p.add_argument("--seed", type=arguments.seed, help="seed of initial weights, data order and noise")
    p.add_argument("--workers", type=int, help="data-loading worker processes per training process")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--sample-every", type=int, help="steps between sample grids (0: at the end only)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any field, e.g. --set model.channels=64 --set train.ema_decay=0.999 (repeatable)",
    )
    p.add_argument("--clip", metavar="DIR", help="frozen CLIP model folder (decoder, noised_clip)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest valid checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration as JSON and exit")
    p.add_argument("--list", action="store_true", help="list stages and their presets, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")
    p.set_defaults(func=run)


def _value(text: str) -> object:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string


def _overrides(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, object]]:
    train = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "grad_accum": args.grad_accum,
        "mixed_precision": args.mixed_precision,
        "compile": args.compile,
        "channels_last": args.channels_last,
        "seed": args.seed,
        "num_workers": args.workers,
        "checkpoint_every": args.checkpoint_every,
        "sample_every": args.sample_every,
    }
    train = {k: v for k, v in train.items() if v is not None}
    model: dict[str, object] = {}
    if getattr(args, "clip", None):
        model["clip"] = args.clip
    for item in args.set:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("model", "train"):
            raise ValueError(f"--set {item!r}: expected model.KEY=VALUE or train.KEY=VALUE (KEY may be dotted)")
        (model if section == "model" else train)[name] = _value(value)
    return model, train


def _apply(config: dict[str, object], overrides: dict[str, object], section: str) -> None:
    """Apply ``{"a.b.c": value}`` overrides to a nested config dict; a path that does not exist is an error."""
    for path, value in overrides.items():
        node, keys = config, path.split(".")
        for i, key in enumerate(keys[:-1]):
            child = node.get(key) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                where = ".".join([section, *keys[: i + 1]])
                raise ValueError(f"--set {section}.{path}: {where} is not a nested config section")
            node = child
        node[keys[-1]] = value


def _embedding_data(data: str | None, model: dict[str, object]) -> str | None:
    """Prior stages (a ``model.embeddings`` field): ``--data embeddings:DIR`` also sets ``model.embeddings``, and
    ``model.embeddings`` alone means ``--data embeddings:DIR``, so the two never name different folders."""
    from unclip.data.embedding_source import SCHEME, embeddings_folder, same_folder

    if "embeddings" not in model:
        return data  # an image stage; `embeddings:` there is refused by the engine with its own message
    current = str(model["embeddings"] or "")
    if not data:
        return f"{SCHEME}:{current}" if current else data
    folder = embeddings_folder(data)
    if folder is not None:
        if not current:
            model["embeddings"] = folder
        elif not same_folder(current, folder):
            raise ValueError(f"--data {data} and model.embeddings={current!r} name different folders; give one")
    return data


def resolve(args: argparse.Namespace):  # -> RunConfig
    """The run configuration the options ask for: preset, or the run folder's config on --resume, plus overrides."""
    import json
    import os
    from dataclasses import asdict
    from pathlib import Path

    from unclip.train.config import RunConfig, TrainConfig, from_dict
    from unclip.train.stage import get_stage

    if not args.stage:
        raise ValueError("missing STAGE; see `unclip train --list`")
    stage = get_stage(args.stage)
    model_over, train_over = _overrides(args)
    saved_path = Path(args.out) / "config.json" if args.out else None
    if args.resume and saved_path is not None and saved_path.exists():
        saved = RunConfig.from_json(json.loads(saved_path.read_text(encoding="utf-8")))
        preset_name = args.preset or saved.preset
        model_dict, train_dict, data = dict(saved.model), asdict(saved.train), args.data or saved.data
    else:
        preset_name, preset = stage.preset(args.preset)
        model_dict, train_dict, data = stage.config_to_dict(preset.model), asdict(preset.train), args.data
    stage.preset(preset_name)  # an unknown preset is an error even on resume
    _apply(model_dict, model_over, "model")
    _apply(train_dict, train_over, "train")
    data = _embedding_data(data, model_dict)
    if not data:
        raise ValueError(
            "missing --data; e.g. --data shapes, --data folder:PATH, --data wds:PATH/{000..009}.tar "
            "(priors: --data embeddings:DIR)"
        )
    model_cfg = stage.config_from_dict(model_dict)  # validates types and values
    train_cfg = from_dict(TrainConfig, train_dict, where="train")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return RunConfig(args.stage, preset_name, stage.config_to_dict(model_cfg), train_cfg, data, world_size=world)


def run(args: argparse.Namespace) -> int:
    from unclip.train.stage import get_stage, stage_names

    if args.list:
        for name in stage_names():
            stage = get_stage(name)
            for preset_name, preset in stage.presets().items():
                print(f"{name:12s} {preset_name:12s} {preset.description}")
        return 0
    cfg = resolve(args)
    if args.dry_run:
        print(cfg.dumps())
        return 0
    if not args.out:
        raise ValueError("missing --out RUN_DIR")
    from unclip.train.engine import train

    result = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    state = "stopped" if result.interrupted else "finished"
    if result.main_process:
        print(
            f"{state} at step {result.step}: loss {result.loss}, {result.samples_per_s:.1f} samples/s, "
            f"{result.skipped} corrupt sample(s) skipped; run folder {result.run_dir}"
        )
    code = 130 if result.interrupted else 0
    if cfg.world_size > 1:  # every file is written and closed; see process_exit for why finalization is skipped
        from unclip.train.process_exit import leave_process

        leave_process(code)
    return code
