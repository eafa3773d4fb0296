"""``unclip generate | vary | inpaint | interpolate | textdiff | probe``: text-to-image, the manipulations of §3,
inpainting, and the probing of §4."""

from __future__ import annotations

import argparse

from unclip.cli import arguments

BUNDLED = "the bundled Shapes-world model"
# Images one run holds in memory and writes at the end: a bound, so that a mistyped --n is an error, not a machine
# out of memory. A --prompts run writes each image as it is made and takes any number of prompts.
MAX_IMAGES = 1000


def _common(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--model", help=f"model folder (pipeline.json); default: {BUNDLED}")
    where = "" if out_default else "; outputs/generate, or outputs/prompts with --prompts"  # chosen by run_generate
    p.add_argument("--out", default=out_default, help=f"folder for PNGs, JSON sidecars and contact_sheet.png{where}")
    p.add_argument("--seed", type=arguments.seed, default=0, help="seed of the first image; image k uses seed + k")
    p.add_argument("--decoder-steps", type=int, help="decoder sampling steps")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    add_pipeline_options(p)


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """Options every command that loads a pipeline takes: sampling settings, then speed switches."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampling setting for this run (repeatable), e.g. --set decoder_sampler=ddpm --set "
                   "z_source=text --set upsampler_strength=0.5 --set decoder_guidance=3 (both decoder scales); "
                   "see docs/pipeline.md")  # fmt: skip
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast the networks (bf16 for GPUs; the samplers stay fp32)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (pays off on a GPU)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last (NHWC) memory format for the decoder and upsamplers (GPU)")  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    g = subparsers.add_parser(
        "generate", help="images from a caption or a file of captions (text-to-image)", formatter_class=fmt,
        epilog="With --prompts, every image is written as soon as it is made and a rerun of the same command makes "
        "only the missing ones; --out defaults to outputs/prompts. The flat layout's sidecars keep each row's "
        "fields, so `unclip judge OUT` scores images of the suite from `unclip data prompts`.",
    )  # fmt: skip
    g.add_argument("prompt", nargs="?", help='the caption; "" for unconditional samples')
    g.add_argument("--prompts", metavar="FILE", help="a .txt file (one caption a line) or .jsonl file (objects "
                   "with prompt/text/caption and optional key; GenEval's evaluation_metadata.jsonl works) instead of "
                   "PROMPT")  # fmt: skip
    g.add_argument("--layout", choices=("flat", "geneval"), default="flat",
                   help="with --prompts: KEY_000.png + .json, or GenEval's 00000/samples/0000.png")  # fmt: skip
    # --num-images: under torchrun, whose own options --nnodes, --node-rank… make a bare --n ambiguous to its parser.
    g.add_argument("--n", "--num-images", dest="n", type=int, default=4,
                   help="number of images (per prompt with --prompts)")  # fmt: skip
    g.add_argument("--batch-size", type=int, help="images sampled at once (default: all --n at once; 8 with "
                   "--prompts); images do not depend on it")  # fmt: skip
    g.add_argument("--prior-steps", type=int, help="prior sampling steps")
    g.add_argument("--prior-guidance", type=float, help="prior guidance scale")
    g.add_argument("--image-guidance", type=float, help="decoder guidance scale for z_i")
    g.add_argument("--text-guidance", type=float, help="decoder guidance scale for the caption")
    _common(g, None)
    g.set_defaults(func=run_generate)

    v = subparsers.add_parser("vary", help="variations of an image (§3.1)", formatter_class=fmt)
    v.add_argument("image", help="an image file of any size or mode")
    v.add_argument("--n", type=int, default=4, help="number of variations")
    v.add_argument("--eta", type=float, default=1.0, help="DDIM eta: 0 reconstructs, larger varies more")
    _common(v, "outputs/vary")
    v.set_defaults(func=run_vary)

    ip = subparsers.add_parser(
        "inpaint", help="fill a masked region of an image to fit a caption or the image (RePaint)", formatter_class=fmt,
        epilog="The mask is white (or transparent) where to fill and has the image's size; --box gives a rectangle "
        "instead, and --zoom-out outpaints (the image shrunk on the canvas, the border filled). With a PROMPT "
        "describing the whole image wanted, z_i comes from the prior (an edit); without, "
        "from the image itself (a repair). Unmasked pixels come back unchanged at the output size.",
    )  # fmt: skip
    ip.add_argument("image", help="an image file of any size or mode")
    where = ip.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="mask image: white or transparent pixels are filled")
    where.add_argument("--box", help="X0,Y0,X1,Y1: a rectangle to fill, as fractions of the image (0 to 1)")
    where.add_argument("--zoom-out", type=float, metavar="SCALE",
                       help="outpaint: shrink the image to SCALE (0-1) of the canvas and fill around it")  # fmt: skip
    ip.add_argument("--anchor", choices=("center", "left", "right", "top", "bottom"), default="center",
                    help="with --zoom-out: where the shrunk image sits")  # fmt: skip
    ip.add_argument("--prompt", default="", help="caption of the whole image wanted; empty: the image's own z_i")
    ip.add_argument("--from", dest="source", help="a caption of the image as it is: z_i is then the image's own "
                    "turned toward --prompt (§3.3's text diff) instead of the prior's sample")  # fmt: skip
    ip.add_argument("--theta", type=float, default=0.5, help="with --from: how far z_i turns (the paper: 0.25-0.5)")
    ip.add_argument("--n", type=int, default=4, help="number of fills")
    ip.add_argument("--eta", type=float, default=1.0, help="DDIM noise of RePaint's steps (1: DDPM, as RePaint)")
    ip.add_argument("--resample", type=int, help="RePaint's resamplings per block (default: inpaint_resample)")
    ip.add_argument("--jump", type=int, help="RePaint's block length in steps (default: inpaint_jump)")
    _common(ip, "outputs/inpaint")
    ip.set_defaults(func=run_inpaint)

    i = subparsers.add_parser("interpolate", help="interpolate between two images (§3.2)", formatter_class=fmt)
    i.add_argument("image1")
    i.add_argument("image2")
    i.add_argument("--frames", type=int, default=8, help="images along the path, both ends included")
    i.add_argument("--latent", choices=("fixed", "slerp"), default="fixed", help="x_T fixed at image1's or slerped")
    _common(i, "outputs/interpolate")
    i.set_defaults(func=run_interpolate)

    t = subparsers.add_parser("textdiff", help="edit an image by a caption difference (§3.3)", formatter_class=fmt)
    t.add_argument("image")
    t.add_argument("--from", dest="source", required=True, help="a caption of the image as it is")
    t.add_argument("--to", dest="target", required=True, help="the caption to move toward")
    t.add_argument("--frames", type=int, default=5, help="images from theta = 0 to --max-theta")
    t.add_argument("--max-theta", type=float, default=0.5, help="how far to move (the paper uses 0.25-0.5)")
    _common(t, "outputs/textdiff")
    t.set_defaults(func=run_textdiff)

    pr = subparsers.add_parser(
        "probe", help="decode an image's z_i rebuilt from its top PCA components (§4, Fig. 7)", formatter_class=fmt
    )
    pr.add_argument("image")
    pr.add_argument("--dims", default="1,2,4,8,16,32,all", help="principal components per image; all: z_i itself")
    pr.add_argument(  # the defaults of unclip.pipeline.probing, spelled out so that --help imports no torch
        "--pca-data", default="shapes:split=train",
        help="images whose CLIP embeddings the PCA is fitted on (any --data spec of training, or embeddings:DIR "
        "from unclip embed); fits are cached per CLIP, data and size",
    )  # fmt: skip
    pr.add_argument("--pca-n", type=int, default=5000, help="embeddings the PCA is fitted on")
    pr.add_argument("--no-cache", action="store_true", help="fit the PCA afresh and do not store it")
    _common(pr, "outputs/probe")
    pr.set_defaults(func=run_probe)


def load_pipeline(args: argparse.Namespace):
    import dataclasses
    from importlib import resources

    from unclip.pipeline import UnCLIPPipeline
    from unclip.pipeline.settings import parse_overrides

    folder = args.model
    if folder is None:
        bundled = resources.files("unclip") / "assets" / "shapes-model"
        if not (bundled / "pipeline.json").is_file():
            raise FileNotFoundError(f"{BUNDLED} is not trained yet; pass --model DIR (a folder with pipeline.json)")
        folder = str(bundled)
    pipe = UnCLIPPipeline.from_pretrained(folder, device=args.device)
    pipe.set_precision(getattr(args, "precision", "fp32"))
    if getattr(args, "compile", False):
        pipe.compile()
    if getattr(args, "channels_last", False):
        pipe.set_memory_format(True)
    overrides = parse_overrides(getattr(args, "set", []), pipe.settings)  # validated before any work
    pipe.settings = dataclasses.replace(pipe.settings, **overrides)
    if args.decoder_steps is not None:  # replace() validates the new value before any work
        steps = args.decoder_steps
        pipe.settings = dataclasses.replace(pipe.settings, decoder_steps=steps, inversion_steps=steps)
    return pipe, folder


def _finish(args, images, records, labels, stem: str, settings=None) -> int:
    """Write the images, one sidecar each (with ``settings``, the run's sampling settings, where given), and the
    contact sheet."""
    import dataclasses

    from unclip.pipeline.outputs import write_results

    if settings is not None:
        records = [{**r, "settings": dataclasses.asdict(settings)} for r in records]
    out = write_results(args.out, images, records, labels, stem=stem)
    print(f"wrote {len(images)} images and contact_sheet.png to {out}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    if (args.prompt is None) == (args.prompts is None):
        raise ValueError('give a PROMPT or --prompts FILE (one of them; "" is the unconditional prompt)')
    for name in ("n", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    _check_counts(args)
    if args.prompts is None and args.layout != "flat":
        raise ValueError("--layout applies to --prompts runs")
    args.out = args.out or ("outputs/prompts" if args.prompts else "outputs/generate")
    from unclip.pipeline.sharding import process_device, world_from_environment

    _, world, local_rank = world_from_environment()
    if world > 1 and args.prompts is None:
        raise ValueError(f"{world} processes (torchrun) share the images of a --prompts run only; give --prompts FILE")
    args.device = process_device(args.device, local_rank)
    rows = None
    if args.prompts is not None:
        from unclip.pipeline.prompt_files import read_prompt_file

        rows = read_prompt_file(args.prompts)  # read and checked before the model loads
    if rows is None:  # a single-prompt run replaces its --out folder whole: checked before the model loads
        _refuse_replacing_a_prompt_run(args.out)
        _check_out(args)
    pipe, folder = load_pipeline(args)
    overrides = {
        "prior_steps": args.prior_steps, "prior_guidance": args.prior_guidance,
        "decoder_guidance_image": args.image_guidance, "decoder_guidance_text": args.text_guidance,
    }  # fmt: skip
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if rows is not None:
        return _generate_from_file(args, pipe, folder, rows, overrides)
    out = pipe(args.prompt, num_images=args.n, seed=args.seed, batch_size=args.batch_size, progress=True, **overrides)
    requirement = _suite_requirement(args.prompt)
    records = [
        {"prompt": args.prompt, "seed": s, "model": folder, "settings": out.settings, **requirement} for s in out.seeds
    ]
    return _finish(args, out.images, records, [f"seed {s}" for s in out.seeds], "image")


def _generate_from_file(args: argparse.Namespace, pipe, folder: str, rows: list, overrides: dict) -> int:
    import dataclasses
    from pathlib import Path

    from unclip.pipeline.prompt_files import generate_from_prompts
    from unclip.pipeline.sharding import process_shard

    # A row that states nothing to judge but is a prompt of the Shapes-world suite gets the suite's requirement, as a
    # single-prompt run does, so `unclip judge OUT` scores it.
    rows = [
        r
        if {"requirement", "tag"} & set(r.record)
        else dataclasses.replace(r, record={**_suite_requirement(r.prompt), **r.record})
        for r in rows
    ]
    with process_shard() as shard:
        done = generate_from_prompts(
            pipe, rows, args.out, images_per_prompt=args.n, seed=args.seed, batch_size=args.batch_size or 8,
            layout=args.layout, model=str(Path(folder).resolve()), shard=shard, **overrides,
        )  # fmt: skip
    if not shard.is_main:
        return 0
    print(
        f"{done['images']} images of {len(rows)} prompts in {done['out']} ({done['generated']} made now, "
        f"{done['kept']} kept from before); contact_sheet.png shows the first prompts"
    )
    return 0


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("n", "frames", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value > MAX_IMAGES:
            option = f"--{name.replace('_', '-')}"
            if getattr(args, "prompts", None) is not None:
                raise ValueError(f"{option} {value}: at most {MAX_IMAGES}; more prompts make more images")
            raise ValueError(f"{option} {value}: at most {MAX_IMAGES} (the images of a run are held in memory); for "
                             "more, generate from a --prompts file, which writes each image as it is made")  # fmt: skip


def _check_out(args: argparse.Namespace) -> None:
    """--out must be new, empty or earlier results: it is replaced whole; and the image counts bounded (checked
    before any work)."""
    from unclip.pipeline.outputs import check_results_folder

    _check_counts(args)
    check_results_folder(args.out)


def _refuse_replacing_a_prompt_run(out: str) -> None:
    """A single-prompt run replaces its --out folder whole; never one that holds a (resumable) prompt-file run."""
    from pathlib import Path

    from unclip.pipeline.prompt_files import RUN_FILE

    if (Path(out) / RUN_FILE).is_file():
        raise ValueError(f"{out} holds a --prompts run, which this would replace; choose another --out")


def _suite_requirement(prompt: str) -> dict:
    """The scene-graph requirement when the prompt comes from the Shapes-world prompt suite, else nothing."""
    from unclip.data.shapes import PROMPT_SUITE

    for entry in PROMPT_SUITE:
        if entry.text == prompt:
            info = entry.to_json()
            return {k: info[k] for k in ("key", "category", "requirement", "suite")}
    return {}


def run_vary(args: argparse.Namespace) -> int:
    from unclip.pipeline import to_pil, variations

    _check_out(args)
    pipe, folder = load_pipeline(args)
    images = to_pil(variations(pipe, args.image, n=args.n, eta=args.eta, seed=args.seed))
    records = [
        {"source": args.image, "eta": args.eta, "seed": args.seed + k, "model": folder} for k in range(len(images))
    ]
    return _finish(args, images, records, [f"seed {r['seed']}" for r in records], "variation", pipe.settings)


def run_inpaint(args: argparse.Namespace) -> int:
    import dataclasses

    from unclip.pipeline import to_pil
    from unclip.pipeline.inpainting import box_mask, inpaint, outpaint_canvas
    from unclip.pipeline.pipeline import rgb_image

    _check_out(args)
    image = rgb_image(args.image)  # read once, and checked before the model loads
    if args.box is not None:
        try:
            box = [float(v) for v in args.box.split(",")]
        except ValueError:
            raise ValueError(f"--box {args.box!r}: expected four numbers X0,Y0,X1,Y1") from None
        mask = box_mask(image.size, box)
    elif args.zoom_out is not None:
        image, mask = outpaint_canvas(image, args.zoom_out, args.anchor)
    else:
        mask = args.mask
    pipe, folder = load_pipeline(args)
    changes = {k: v for k, v in (("inpaint_resample", args.resample), ("inpaint_jump", args.jump)) if v is not None}
    pipe.settings = dataclasses.replace(pipe.settings, **changes)
    out = inpaint(pipe, image, mask, args.prompt, n=args.n, eta=args.eta, seed=args.seed, progress=True,
                  source=args.source, theta=args.theta)  # fmt: skip
    s = pipe.settings
    zoom = None if args.zoom_out is None else {"scale": args.zoom_out, "anchor": args.anchor}
    records = [
        {"source": args.image, "mask": args.mask, "box": args.box, "zoom_out": zoom, "prompt": args.prompt,
         "from": args.source, "theta": args.theta if args.source else None, "seed": args.seed + k, "eta": args.eta,
         "resample": s.inpaint_resample, "jump": s.inpaint_jump, "model": folder}
        for k in range(len(out))
    ]  # fmt: skip
    return _finish(args, to_pil(out), records, [f"seed {r['seed']}" for r in records], "inpainting", pipe.settings)


def run_interpolate(args: argparse.Namespace) -> int:
    from unclip.pipeline import interpolate, to_pil

    _check_out(args)
    pipe, folder = load_pipeline(args)
    images = to_pil(interpolate(pipe, args.image1, args.image2, frames=args.frames, latent=args.latent, seed=args.seed))
    thetas = [k / (args.frames - 1) for k in range(args.frames)]
    records = [
        {"sources": [args.image1, args.image2], "theta": th, "latent": args.latent, "model": folder} for th in thetas
    ]
    return _finish(args, images, records, [f"θ={th:.2f}" for th in thetas], "frame", pipe.settings)


def run_textdiff(args: argparse.Namespace) -> int:
    from unclip.pipeline import text_diff, to_pil

    _check_out(args)
    pipe, folder = load_pipeline(args)
    images = to_pil(
        text_diff(
            pipe, args.image, args.source, args.target, frames=args.frames, max_theta=args.max_theta, seed=args.seed
        )
    )
    thetas = [args.max_theta * k / (args.frames - 1) for k in range(args.frames)]
    records = [
        {"source": args.image, "from": args.source, "to": args.target, "theta": th, "model": folder} for th in thetas
    ]
    return _finish(args, images, records, [f"θ={th:.2f}" for th in thetas], "frame", pipe.settings)


def run_probe(args: argparse.Namespace) -> int:
    from unclip.pipeline import to_pil
    from unclip.pipeline.pipeline import from_pil
    from unclip.pipeline.probing import embedding_pca, parse_dims, probe

    dims = parse_dims(args.dims)  # before any work
    _check_out(args)
    pipe, folder = load_pipeline(args)
    image = from_pil([args.image], max(pipe.decoder.config.resolution, int(pipe.clip.image_size)))  # read it first
    pca = embedding_pca(pipe, folder, spec=args.pca_data, n=args.pca_n, cache=not args.no_cache,
                        progress=True)  # fmt: skip
    images = to_pil(probe(pipe, image, dims, pca, seed=args.seed, progress=True))
    records, labels = [], []
    for k in dims:
        share = 1.0 if k is None else pca.cumulative(k)
        records.append({"source": args.image, "dims": "all" if k is None else k, "variance": share, "seed": args.seed,
                        "pca_data": args.pca_data, "pca_n": pca.n, "model": folder})  # fmt: skip
        labels.append("z_i" if k is None else f"{k} dims, {share:.0%}")
    return _finish(args, images, records, labels, "probe", pipe.settings)
