"""Does the upsampler keep what the judge sees? Its input clean or blurred as in training (docs/results.md).

``unclip eval upsampler`` scores pixels (PSNR, SSIM) and statistics (FID, KID). This asks the compositional
judge instead, in two settings, for bicubic and for the upsampler with ``upsampler_condition`` ``trained`` and
``clean``:

1. ``--scenes`` held-out scenes rendered at the output size, downsampled to the decoder's: the fraction whose
   upsampled image still satisfies every requirement of its source scene graph (the truth itself is the ceiling);
2. the prompt suite (``--per-category`` prompts of every category, ``--images-per-prompt`` seeds) decoded once
   at the decoder's size, then upsampled each way: the judge's per-category scores, and KID against real test
   images at the output size.

    python scripts/experiments/upsampler_condition.py [--model DIR] [--scenes 100] [--per-category 4] \
        [--images-per-prompt 2] [--json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from unclip.data.shapes import judge
from unclip.data.shapes.batch import render_batch
from unclip.data.shapes.requirements import requirements_for_scene
from unclip.diffusion import generators_from_seeds
from unclip.eval.generation import _distances, generate_jobs, image_features, judge_jobs, judge_ready, suite_jobs
from unclip.eval.inception import InceptionFeatures
from unclip.pipeline import UnCLIPPipeline

WAYS = ("bicubic", "trained", "clean")


def upsample_each_way(pipe, low: torch.Tensor, seed: int = 0, batch_size: int = 8) -> dict[str, torch.Tensor]:
    out: dict[str, list[torch.Tensor]] = {w: [] for w in WAYS}
    for i in range(0, len(low), batch_size):
        x = low[i : i + batch_size]
        out["bicubic"].append(F.interpolate(x, size=pipe.resolution, mode="bicubic", align_corners=False).clamp(-1, 1))
        for way in ("trained", "clean"):
            s = dataclasses.replace(pipe.settings, upsampler_condition=way)
            out[way].append(pipe.upsample(x, generators_from_seeds(range(seed + i, seed + i + len(x))), s).cpu())
    return {w: torch.cat(v) for w, v in out.items()}


def scene_faithfulness(samples, images: torch.Tensor) -> float:
    kept = []
    for s, image in zip(samples, judge_ready(images), strict=True):
        kept.append(all(bool(judge(image, r)) for r in requirements_for_scene(s.scene).values()))
    return float(np.mean(kept))


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--per-category", type=int, default=4)
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--reference-n", type=int, default=300, help="real test images for KID")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = UnCLIPPipeline.from_pretrained(args.model or str(resources.files("unclip") / "assets" / "shapes-model"))
    if not pipe.upsamplers:
        raise SystemExit("this model has no upsampler")
    low_res = pipe.decoder.config.resolution
    result: dict[str, dict] = {"scenes": {"n": args.scenes}, "suite": {}}

    samples, high = render_batch(args.scenes, pipe.resolution, split="test")
    low = F.interpolate(high, size=low_res, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    result["scenes"]["truth"] = scene_faithfulness(samples, high)
    result["scenes"]["low_resolution"] = scene_faithfulness(samples, low)
    for way, images in upsample_each_way(pipe, low).items():
        result["scenes"][way] = scene_faithfulness(samples, images)

    jobs = suite_jobs(args.per_category, args.images_per_prompt)
    base = copy.copy(pipe)
    base.upsamplers = []  # the decoder's images once; each way upsamples the same ones
    decoded = generate_jobs(base, jobs, batch_size=16, progress=not args.json)
    inception = InceptionFeatures()
    _, real = render_batch(args.reference_n, pipe.resolution, split="test", seed=1)
    real_features = image_features(inception, real)
    result["suite"]["decoder"] = judge_jobs(jobs, decoded)
    for way, images in upsample_each_way(pipe, decoded).items():
        judged = judge_jobs(jobs, images)
        judged.update(_distances(real_features, image_features(inception, images)))
        result["suite"][way] = judged
    result["suite"]["images"] = len(jobs)

    if args.json:
        print(json.dumps(result, indent=2))
        return
    s = result["scenes"]
    print(f"held-out scenes kept (n={args.scenes}): truth {s['truth']:.3f}, {low_res} px {s['low_resolution']:.3f}, "
          + ", ".join(f"{w} {s[w]:.3f}" for w in WAYS))  # fmt: skip
    print(f"prompt suite ({len(jobs)} images): judge overall / KID against {args.reference_n} real images")
    print(f"  decoder at {low_res} px: {result['suite']['decoder']['overall']:.3f}")
    for w in WAYS:
        r = result["suite"][w]
        print(f"  {w}: {r['overall']:.3f} / {r['kid']:.4f} ± {r['kid_std']:.4f} (FID {r['fid']:.1f})")


if __name__ == "__main__":
    main()
