"""Decoder guidance with equal scales (two branches) against the three-branch path, on the bundled model.

s_image = s_text = s telescopes to D(none) + s (D(z_i, y) - D(none)), so unclip.diffusion.guided drops the middle
branch; a second scale of s + 1e-7 forces the three-branch path for comparison. Prints seconds for 4 images x 20
DDIM steps (best of 3), the ratio, and the largest pixel difference between the two results.

    OMP_NUM_THREADS=2 python benchmarks/guidance_branches.py
"""

import dataclasses
import time

import torch

from unclip.diffusion import generators_from_seeds
from unclip.pipeline import UnCLIPPipeline


def main() -> None:
    pipe = UnCLIPPipeline.from_pretrained("src/unclip/assets/shapes-model")
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(4, 256), dim=-1)
    enc, empty = pipe.encode_text(["a red circle"] * 4)
    res = {}
    with torch.no_grad():
        for label, (a, b) in (("equal 3/3 (2 branches)", (3.0, 3.0)), ("3/3+1e-7 (3 branches)", (3.0, 3.0 + 1e-7))):
            s = dataclasses.replace(pipe.settings, decoder_guidance_image=a, decoder_guidance_text=b,
                                    decoder_steps=20, decoder_sampler="ddim")  # fmt: skip
            pipe.decode(z, generators_from_seeds(range(4)), text=enc, drop_text=empty, s=s)  # warm-up
            times = []
            for _ in range(3):
                t = time.perf_counter()
                out = pipe.decode(z, generators_from_seeds(range(4)), text=enc, drop_text=empty, s=s)
                times.append(time.perf_counter() - t)
            res[label] = (min(times), out)
            print(f"{label:>24}: {min(times):.3f} s for 4 images x 20 DDIM steps")
    (t2, a), (t3, b) = res.values()
    print(f"ratio {t2 / t3:.2f}, largest pixel difference {(a - b).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
