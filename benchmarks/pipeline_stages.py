"""Each stage of the text-to-image pipeline at a model's own settings: seconds per image and peak memory (issue 8).

Stages, in the order a call runs them: CLIP text encoding, the prior (its sampler, steps, guidance and best-of),
the decoder (its sampler and steps; three guidance branches per image, two when both decoder scales are equal)
and each upsampler; then the whole call, and the DDIM inversion a variation starts with. Times are the best of
``--repeats`` calls (after one warm-up call) divided by the batch; peak memory is the high-water mark above the
memory in use before the stage (CPU: the resident set, so it includes what the allocator keeps; CUDA:
``max_memory_allocated``).

    python benchmarks/pipeline_stages.py                          # the bundled model, CPU
    python benchmarks/pipeline_stages.py --model DIR --device cuda --batch 16 --precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from collections.abc import Callable

import torch

from measure import peak_mib, start_peak, timed
from unclip.diffusion import generators_from_seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="pipeline folder; default: the bundled Shapes-world model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4, help="images per call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true", help="decoder and upsamplers in NHWC (GPU)")
    return p.parse_args(argv)


def load(args: argparse.Namespace):
    from importlib import resources

    from unclip.pipeline import UnCLIPPipeline

    folder = args.model or str(resources.files("unclip") / "assets" / "shapes-model")
    pipe = UnCLIPPipeline.from_pretrained(folder, device=args.device).set_precision(args.precision)
    pipe.set_memory_format(args.channels_last)
    return (pipe.compile() if args.compile else pipe), folder


def stages(pipe, batch: int) -> dict[str, Callable[[], object]]:
    """One callable per stage; each consumes the previous stage's output, computed once beforehand."""
    from unclip.pipeline import invert

    prompts = ["a red circle above a blue square", "three green stars", "a yellow heart", "two purple crosses"]
    prompts = (prompts * batch)[:batch]
    gens = lambda: generators_from_seeds(range(batch))  # noqa: E731  (fresh generators for every call)
    s = pipe.settings
    with torch.no_grad(), pipe.autocast():
        enc, empty = pipe.encode_text(prompts)
        z_i = pipe.sample_z_i(enc, empty, gens(), s).float()
        low = pipe.decode(z_i, gens(), text=enc, drop_text=empty, s=s).float()

    def run(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad(), pipe.autocast():
                return fn()

        return call

    scales = (s.decoder_guidance_image, s.decoder_guidance_text)
    branches = 1 if scales == (1.0, 1.0) else 2 if scales[0] == scales[1] else 3  # unclip.diffusion.guided
    out = {
        "CLIP text": run(lambda: pipe.encode_text(prompts)),
        f"prior ({s.prior_sampler} {s.prior_steps}, best of {s.prior_best_of})": run(
            lambda: pipe.sample_z_i(enc, empty, gens(), s)
        ),
        f"decoder ({s.decoder_sampler} {s.decoder_steps}, {branches} branches)": run(
            lambda: pipe.decode(z_i, gens(), text=enc, drop_text=empty, s=s)
        ),
    }
    if pipe.upsamplers:
        name = " + ".join(f"{u.config.low_resolution}→{u.config.resolution}" for u in pipe.upsamplers)
        out[f"upsampler {name} ({s.upsampler_sampler} {s.upsampler_steps})"] = run(
            lambda: pipe.upsample(low, gens(), s)
        )
    out["whole call"] = lambda: pipe(prompts, seed=0)
    out[f"inversion (DDIM {s.inversion_steps}, variations' first step)"] = lambda: invert(pipe, low)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipe, folder = load(args)
    rows = []
    for name, fn in stages(pipe, args.batch).items():
        fn()  # warm-up (and compilation, with --compile)
        base = start_peak(device)
        best = min(timed(fn, device) for _ in range(args.repeats))
        rows.append((name, best / args.batch, peak_mib(device, base)))
    settings = dataclasses.asdict(pipe.settings)
    switches = [args.precision] + ["compiled"] * args.compile + ["channels-last"] * args.channels_last
    print(f"model {folder}; output {pipe.resolution} px; batch {args.batch}; best of {args.repeats}; "
          f"{', '.join(switches)}")  # fmt: skip
    cpu = f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else cpu}; torch {torch.__version__}")
    print(f"settings {settings}\n")
    print("| stage | s / image | share of the call | peak memory (MiB) |")
    print("|---|---|---|---|")
    whole = next(t for n, t, _ in rows if n == "whole call")
    for name, per_image, peak in rows:
        share = "" if name.startswith(("whole", "inversion")) else f"{per_image / whole:.0%}"
        print(f"| {name} | {per_image:.4f} | {share} | {peak:.0f} |")


if __name__ == "__main__":
    main()
