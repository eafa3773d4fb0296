"""Sampler accuracy and overhead, side by side with diffusers' schedulers.

1. Accuracy: for N(mu, Sigma) data (8-D, correlated) driven by the closed-form optimal denoiser, the relative
   covariance error of each sampler's output against Sigma at 5 … 250 steps (exact pushforward for the
   deterministic samplers, 20,000 Monte Carlo samples for the stochastic ones), plus the DDIM inversion
   round-trip error.
2. Overhead: wall time per step of the sampler's own arithmetic on a (16, 3, 64, 64) batch with a free
   denoiser, ours against diffusers' DDIMScheduler / DPMSolverMultistepScheduler step loops (ratio < 1 means
   ours is faster); one run, so read the ratios, not the absolute times.

    python benchmarks/samplers.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "diffusion"))
from gaussian import GaussianDenoiser, correlated_gaussian, exact_samples, mean_cov_errors

from unclip.diffusion import (
    Denoised,
    NoiseSchedule,
    invert_ddim,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)


def accuracy(steps_list: list[int], mc_samples: int) -> None:
    sched = NoiseSchedule.named("cosine")
    mu, sigma = correlated_gaussian()
    den = GaussianDenoiser(mu, sigma, sched)

    def pushforward(sampler, steps):
        grid = sched.grid(steps)
        c = sampler(den, torch.zeros(1, 8, dtype=torch.float64), grid)
        m = sampler(den, torch.eye(8, dtype=torch.float64), grid) - c
        return ((m.T @ m - sigma).norm() / sigma.norm()).item()

    def monte_carlo(steps, **kw):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(mc_samples, 8, generator=g, dtype=torch.float64)
        return mean_cov_errors(sample_ddpm(den, x, sched.grid(steps), generator=g, **kw), mu, sigma)[1]

    floor = mean_cov_errors(exact_samples(mu, sigma, mc_samples, seed=2), mu, sigma)[1]
    print(
        f"\n## Covariance error vs steps (relative Frobenius; Monte Carlo floor with {mc_samples} samples: {floor:.4f})"
    )
    print(f"{'steps':>6} {'DDIM (exact)':>13} {'DPM++2M (exact)':>16} {'DDPM small (MC)':>16} {'DDPM large (MC)':>16}")
    for steps in steps_list:
        print(
            f"{steps:>6} {pushforward(sample_ddim, steps):>13.4f} {pushforward(sample_dpmpp_2m, steps):>16.4f}"
            f" {monte_carlo(steps):>16.4f} {monte_carlo(steps, variance='large'):>16.4f}"
        )
    x0 = exact_samples(mu, sigma, 256, seed=5)
    print("\n## DDIM inversion then DDIM sampling (eta 0): relative reconstruction error, float64")
    print(f"{'steps':>6} {'plain':>10} {'refine=1':>10} {'refine=2':>10} {'refine=8':>10}")
    for steps in (25, 50, 100, 250):
        grid = sched.grid(steps)
        errs = []
        for refine in (0, 1, 2, 8):
            rec = sample_ddim(den, invert_ddim(den, x0, grid, refine=refine), grid)
            errs.append(((rec - x0).norm() / x0.norm()).item())
        print(f"{steps:>6} " + " ".join(f"{e:>10.1e}" for e in errs))


def overhead(steps: int, repeats: int) -> None:
    import diffusers

    sched = NoiseSchedule.named("cosine")
    x_T = torch.randn(16, 3, 64, 64)
    zero = torch.zeros_like(x_T)

    def free(x, t):  # a denoiser that costs nothing, so only the sampler's own work is timed
        return Denoised(zero, x)

    common = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}

    def ref_loop(make):
        s = make()
        s.set_timesteps(steps)
        x = x_T
        for t in s.timesteps:
            x = s.step(x, t, x).prev_sample
        return x

    cases = [
        (
            "DDIM",
            lambda: sample_ddim(free, x_T, sched.grid(steps, "leading")),
            lambda: ref_loop(lambda: diffusers.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)),
        ),
        (
            "DPM-Solver++(2M)",
            lambda: sample_dpmpp_2m(free, x_T, sched.grid(steps)),
            lambda: ref_loop(
                lambda: diffusers.DPMSolverMultistepScheduler(
                    **common, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
                )
            ),
        ),
    ]

    def best_time(fn):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) / steps * 1e3

    print(f"\n## Sampler overhead per step, (16, 3, 64, 64) float32 on the CPU, {steps} steps, best of {repeats}")
    print(f"{'sampler':>18} {'unclip ms':>10} {'diffusers ms':>13} {'ratio':>7}")
    for name, ours, ref in cases:
        a, b = best_time(ours), best_time(ref)
        print(f"{name:>18} {a:>10.3f} {b:>13.3f} {a / b:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer step counts and samples")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    if args.quick:
        accuracy([10, 50], 5000)
        overhead(25, 3)
    else:
        accuracy([5, 10, 20, 50, 100, 250], 20_000)
        overhead(50, 5)


if __name__ == "__main__":
    main()
