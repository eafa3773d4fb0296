"""Our pipeline against diffusers' ``UnCLIPPipeline`` on the same diffusers-layout (Karlo) weights.

Both run Karlo's settings (DDPM: prior 25 steps at guidance 4, decoder 25 at 8, super-resolution 7) on one
batch of prompts, one seed per image; the script prints seconds per image for each, their ratio (below 1: ours is
faster), and the largest pixel difference between their images for one prompt (diffusers' schedulers given the
float64 table ours keep, so the difference is float32 rounding). Then what only ours offers on the same weights:
§2.2's best-of-2 prior, DDIM decoding, and DDIM inversion for a variation (§3.1).

Without ``--folder`` it builds random weights in Karlo's layout at a chosen size (``--width``, ``--resolution``);
with Karlo itself (``--folder karlo-v1-alpha`` holding image_encoder/) it measures the real thing, best on a GPU.

    python benchmarks/karlo_pipeline.py                       # random, CPU
    python benchmarks/karlo_pipeline.py --folder DIR --device cuda --batch 4
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from measure import timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pipeline"))

# Short enough for the random folder's toy tokenizer (16 positions); Karlo's has 77.
PROMPTS = ["a red circle", "a blue circle", "red", "a blue"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", help="a diffusers UnCLIPPipeline folder; default: random weights in Karlo's layout")
    p.add_argument("--width", type=int, default=64, help="U-Net base width of the random folder")
    p.add_argument("--resolution", type=int, default=32, help="decoder side of the random folder (upsampler: 2x)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    from diffusers import UnCLIPPipeline as DiffusersUnCLIP
    from diffusers_unclip_folder import exact_schedules, make_folder

    from unclip.pipeline import UnCLIPPipeline
    from unclip.pipeline.manipulations import decode_latents, invert

    device = torch.device(args.device)
    tmp = tempfile.TemporaryDirectory()
    if args.folder:
        folder = Path(args.folder)
        ref = DiffusersUnCLIP.from_pretrained(str(folder))
    else:
        folder = Path(tmp.name)
        ref = make_folder(folder, width=args.width, resolution=args.resolution)
    ref = ref.to(device)
    ref.set_progress_bar_config(disable=True)
    exact_schedules(ref)
    ours = UnCLIPPipeline.from_pretrained(folder, device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    seeds = list(range(args.batch))

    def run_ref():
        return ref(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")

    def run_ours(**overrides):
        return lambda: ours(prompts, seed=seeds, **overrides)

    def best(fn) -> float:
        fn()  # warm-up
        return min(timed(fn, device) for _ in range(args.repeats)) / args.batch

    params = sum(p.numel() for p in ours.decoder.parameters()) / 1e6
    print(f"device: {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); "
          f"decoder {params:.1f} M parameters at {ours.decoder.config.resolution} px -> {ours.resolution} px; "
          f"batch {args.batch}, best of {args.repeats}")  # fmt: skip
    with torch.no_grad():
        t_ref, t_ours = best(run_ref), best(run_ours())
        print(f"{'Karlo settings':>34}  diffusers {t_ref:.3f} s/image   unclip {t_ours:.3f} s/image   "
              f"ratio {t_ours / t_ref:.2f}")  # fmt: skip
        one = torch.from_numpy(ref(prompts[0], generator=torch.Generator().manual_seed(7), output_type="np").images)
        mine = ((ours([prompts[0]], seed=7).tensors.float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
        print(f"{'same seed, largest difference':>34}  {(one - mine).abs().max().item():.2e} (pixels in [0, 1])")
        for label, overrides in (
            ("prior best of 2", {"prior_best_of": 2}),
            ("DDIM decoder, 25 steps", {"decoder_sampler": "ddim"}),
        ):
            t = best(run_ours(**overrides))
            print(f"{label:>34}  unclip {t:.3f} s/image   ({t / t_ref:.2f} x diffusers' Karlo settings)")
        s = dataclasses.replace(ours.settings, inversion_steps=25)
        ours.settings = s
        image = torch.rand(1, 3, ours.decoder.config.resolution, ours.decoder.config.resolution) * 2 - 1

        def variation():
            z_i, x_T = invert(ours, image.to(device))
            decode_latents(ours, z_i, x_T, [0], eta=1.0)

        if getattr(ours.clip, "has_image_tower", True):
            t = best(variation)
            print(f"{'variation by DDIM inversion (25)':>34}  unclip {t * args.batch:.3f} s/image (diffusers: none)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
