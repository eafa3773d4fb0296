"""Our samplers against diffusers' schedulers (the field's reference), on identical grids and denoiser.

diffusers keeps alpha_bar in float32, so agreement is to float32 precision. Two conventions differ and are
lined up here rather than in the library: diffusers' DDIM steps to ``t - T // n`` (the next grid entry only
for "leading" spacing), and its DPM-Solver grid is its own, so we walk diffusers' timesteps.
"""

import pytest
import torch
from gaussian import GaussianDenoiser, correlated_gaussian

from unclip.diffusion import NoiseSchedule, sample_ddim, sample_dpmpp_2m

diffusers = pytest.importorskip("diffusers")

SCHED = NoiseSchedule.named("cosine")
COMMON = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


@pytest.fixture
def setup():
    mu, sigma = correlated_gaussian()
    x_T = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return GaussianDenoiser(mu, sigma, SCHED), x_T


def run_reference(scheduler, denoiser, x_T, field):
    x = x_T.clone()
    for t in scheduler.timesteps:
        d = denoiser(x, torch.full((x.shape[0],), int(t)))
        x = scheduler.step(getattr(d, field), t, x).prev_sample
    return x


@pytest.mark.parametrize("steps", [10, 25, 50])
def test_ddim_matches_diffusers(setup, steps):
    denoiser, x_T = setup
    ref = diffusers.DDIMScheduler(
        **COMMON, prediction_type="epsilon", clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading"
    )
    ref.set_timesteps(steps)
    ours = sample_ddim(denoiser, x_T, SCHED.grid(steps, "leading"))
    assert SCHED.timesteps(steps, "leading").tolist() == ref.timesteps.tolist()
    assert (run_reference(ref, denoiser, x_T, "eps") - ours).abs().max().item() < 1e-5


@pytest.mark.parametrize("steps", [10, 25, 50])
def test_dpmpp_2m_matches_diffusers(setup, steps):
    # Fed x0 ("sample" prediction): fed eps, diffusers recovers x0 by dividing by alpha = 5e-5 at t = 999 in
    # float32 and drifts by ~2e-4, while our Denoised carries x0 itself.
    denoiser, x_T = setup
    ref = diffusers.DPMSolverMultistepScheduler(
        **COMMON, prediction_type="sample", algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    ref.set_timesteps(steps)
    ours = sample_dpmpp_2m(denoiser, x_T, SCHED.grid_from(ref.timesteps))
    assert (run_reference(ref, denoiser, x_T, "x0") - ours).abs().max().item() < 1e-5


def test_schedule_matches_diffusers_cosine_table():
    ref = diffusers.DDPMScheduler(**COMMON)
    rel = ((ref.alphas_cumprod.double() - SCHED.alpha_bar) / SCHED.alpha_bar).abs().max().item()
    assert rel < 1e-4  # float32 cumulative product against our float64 one
