"""Samplers against the closed-form Gaussian denoiser (STYLE.md practice 13).

Tolerances: with N = 20,000 samples, the sample mean's standard error is <= sqrt(2/N) = 0.01 per dim and the
sample covariance's relative Frobenius error from sampling alone is ~0.017 (measured on exact samples). On
top of that each sampler has its own discretization bias (measured exactly by the pushforward tests below):
DDIM-50 0.051, DPM-Solver++(2M)-20 0.050, DDPM-1000 about 0.01. Each bound leaves room for both and no more.
"""

import itertools

import pytest
import torch
from gaussian import GaussianDenoiser, correlated_gaussian, exact_samples, mean_cov_errors

from unclip.diffusion import (
    NoiseSchedule,
    generators_from_seeds,
    get_sampler,
    invert_ddim,
    predict_mmse,
    randn,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)

N = 20_000
SCHED = NoiseSchedule.named("cosine")
MU, SIGMA = correlated_gaussian()


@pytest.fixture
def denoiser():
    return GaussianDenoiser(MU, SIGMA, SCHED)


# (sampler, steps, options, max mean error, max relative covariance error)
MONTE_CARLO = [
    ("ddpm", 1000, {}, 0.04, 0.05),
    ("ddim", 50, {"eta": 0.0}, 0.04, 0.09),
    ("ddim", 100, {"eta": 1.0}, 0.04, 0.09),
    ("dpmpp_2m", 20, {}, 0.04, 0.09),
]


@pytest.mark.parametrize(("name", "steps", "options", "mean_tol", "cov_tol"), MONTE_CARLO)
def test_sampler_reproduces_gaussian_mean_and_covariance(denoiser, name, steps, options, mean_tol, cov_tol):
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(N, 8, generator=g, dtype=torch.float64)
    out = get_sampler(name)(denoiser, x_T, SCHED.grid(steps), generator=g, **options)
    mean_err, cov_err = mean_cov_errors(out, MU, SIGMA)
    assert mean_err < mean_tol, f"{name}-{steps}: mean error {mean_err:.4f}"
    assert cov_err < cov_tol, f"{name}-{steps}: covariance error {cov_err:.4f}"


def test_reference_exact_samples_sit_well_inside_the_tolerances():
    # Calibrates the bounds above: the noise floor of N exact samples.
    mean_err, cov_err = mean_cov_errors(exact_samples(MU, SIGMA, N, seed=2), MU, SIGMA)
    assert mean_err < 0.02 and cov_err < 0.03


def test_ddpm_at_few_steps_fails_the_same_check(denoiser):
    # The check above can fail: ancestral sampling with the posterior variance at 20 steps under-disperses
    # (measured 0.19), which is why the paper's decoder learns its variance.
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(N, 8, generator=g, dtype=torch.float64)
    out = sample_ddpm(denoiser, x_T, SCHED.grid(20), generator=g)
    assert mean_cov_errors(out, MU, SIGMA)[1] > 0.15


def pushforward_cov(sampler, steps, denoiser):
    """A deterministic sampler maps x_T linearly for Gaussian data: output = M x_T + c exactly, so the
    output covariance is M Mᵀ with no sampling noise at all."""
    grid = SCHED.grid(steps)
    c = sampler(denoiser, torch.zeros(1, 8, dtype=torch.float64), grid)
    M = sampler(denoiser, torch.eye(8, dtype=torch.float64), grid) - c
    return c[0], M.T @ M


@pytest.mark.parametrize(("sampler", "order"), [(sample_ddim, 1), (sample_dpmpp_2m, 2)])
def test_deterministic_samplers_converge_at_their_order(denoiser, sampler, order):
    errors = []
    for steps in (25, 50, 100, 200):
        mean, cov = pushforward_cov(sampler, steps, denoiser)
        # The mean is off only by x_T ~ N(0, I) ignoring sqrt(alpha_bar[999]) mu = 5e-5 mu, at any step count.
        assert (mean - MU).abs().max().item() < 1e-4
        errors.append(((cov - SIGMA).norm() / SIGMA.norm()).item())
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    # Doubling the steps divides the error by ~2^order once in the asymptotic regime.
    assert min(ratios[1:]) > 0.8 * 2**order and max(ratios) < 1.3 * 2**order, (errors, ratios)
    assert errors[-1] < (0.015 if order == 1 else 0.001)


def test_ddim_eta_one_is_ddpm_with_posterior_variance(denoiser):
    x_T = torch.randn(64, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = SCHED.grid(30)
    a = sample_ddim(denoiser, x_T, grid, eta=1.0, generator=torch.Generator().manual_seed(9))
    b = sample_ddpm(denoiser, x_T, grid, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(a, b, atol=1e-10)


def test_ddpm_learned_variance_interpolates_between_small_and_large(denoiser):
    from unclip.diffusion import Denoised

    x_T = torch.randn(16, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = SCHED.grid(10)

    def with_frac(frac):
        def den(x, t):
            d = denoiser(x, t)
            return Denoised(d.x0, d.eps, torch.full_like(x, frac))

        return den

    for frac, variance in ((0.0, "small"), (1.0, "large")):
        learned = sample_ddpm(with_frac(frac), x_T, grid, generator=torch.Generator().manual_seed(4))
        fixed = sample_ddpm(denoiser, x_T, grid, generator=torch.Generator().manual_seed(4), variance=variance)
        assert torch.allclose(learned, fixed, atol=1e-10)


def test_ddim_inversion_round_trip(denoiser):
    x0 = exact_samples(MU, SIGMA, 256, seed=5)
    plain = {}
    for steps in (25, 50, 100, 250):
        grid = SCHED.grid(steps)
        rec = sample_ddim(denoiser, invert_ddim(denoiser, x0, grid), grid)
        plain[steps] = ((rec - x0).norm() / x0.norm()).item()
    # The plain scheme (eps taken at the current state) has a first-order error that falls with the steps.
    assert plain[25] > plain[50] > plain[100] > plain[250]
    assert plain[250] < 0.02
    # Refinement solves each step's inverse: < 1e-3 at 100 steps (the bar) and to round-off with more.
    grid = SCHED.grid(100)
    for refine, bound in ((1, 1e-3), (8, 1e-10)):
        rec = sample_ddim(denoiser, invert_ddim(denoiser, x0, grid, refine=refine), grid)
        assert ((rec - x0).norm() / x0.norm()).item() < bound


def test_inversion_maps_data_to_standard_normal_noise(denoiser):
    # The exact inverse of the probability-flow map sends data to x_T ~ N(0, I).
    x0 = exact_samples(MU, SIGMA, 4000, seed=6)
    x_T = invert_ddim(denoiser, x0, SCHED.grid(100), refine=4)
    assert x_T.mean(0).abs().max().item() < 0.06
    assert (torch.cov(x_T.T) - torch.eye(8, dtype=torch.float64)).abs().max().item() < 0.08


@pytest.mark.parametrize(("name", "options"), [("ddpm", {}), ("ddim", {"eta": 0.5}), ("dpmpp_2m", {})])
def test_sample_i_depends_on_seed_i_only(denoiser, name, options):
    sampler = get_sampler(name)
    grid = SCHED.grid(20)
    seeds = [11, 12, 13]
    batch_x = randn((3, 8), generators_from_seeds(seeds), dtype=torch.float64)
    batch = sampler(denoiser, batch_x, grid, generator=generators_from_seeds(seeds), **options)
    alone_x = randn((1, 8), generators_from_seeds([12]), dtype=torch.float64)
    alone = sampler(denoiser, alone_x, grid, generator=generators_from_seeds([12]), **options)
    assert torch.equal(batch_x[1:2], alone_x)
    assert torch.allclose(batch[1:2], alone, atol=1e-12)
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize(("name", "options"), [("ddpm", {}), ("ddim", {"eta": 0.3}), ("dpmpp_2m", {})])
def test_same_call_on_embeddings_and_images(denoiser, name, options):
    # Data of 8 numbers, seen as (B, 8) embeddings or as (B, 2, 2, 2) images: the same call, the same result.
    x_T = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = SCHED.grid(15)
    flat = get_sampler(name)(denoiser, x_T, grid, generator=torch.Generator().manual_seed(1), **options)
    image = get_sampler(name)(
        denoiser, x_T.reshape(5, 2, 2, 2), grid, generator=torch.Generator().manual_seed(1), **options
    )
    assert image.shape == (5, 2, 2, 2)
    assert torch.allclose(image.reshape(5, 8), flat, atol=1e-12)
    x0 = exact_samples(MU, SIGMA, 5, seed=1)
    inv_flat = invert_ddim(denoiser, x0, grid)
    assert torch.allclose(invert_ddim(denoiser, x0.reshape(5, 2, 2, 2), grid).reshape(5, 8), inv_flat)


def test_callback_sees_every_step_and_the_final_estimate(denoiser):
    grid = SCHED.grid(12)
    seen = []
    out = sample_ddim(denoiser, torch.randn(4, 8, dtype=torch.float64), grid, callback=seen.append)
    assert [s.i for s in seen] == list(range(12))
    assert [s.t for s in seen] == grid.t.tolist()
    assert torch.equal(seen[-1].x0, out)  # DDIM's last step lands on its x0 estimate
    assert denoiser.calls == 12


def test_mmse_is_the_data_mean_from_any_start_in_one_call(denoiser):
    # At t = T - 1 the cosine schedule keeps alpha_bar = 2.4e-9 of the signal, so E[x0 | x_T] is the data mean
    # up to sqrt(alpha_bar) |Sigma| |x_T| ~ 1e-4, whatever x_T is and however long the grid.
    x_T = torch.randn(64, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    seen = []
    out = get_sampler("mmse")(denoiser, x_T, SCHED.grid(50), callback=seen.append)
    assert denoiser.calls == 1 and [s.t for s in seen] == [SCHED.num_steps - 1]
    assert (out - MU).abs().max().item() < 1e-3
    # A draw is not the mean: DDIM-50 samples spread as the data do.
    draws = sample_ddim(denoiser, x_T, SCHED.grid(50))
    assert (draws - MU).abs().max().item() > 0.5


def test_mmse_beats_draws_in_cosine_and_squared_error(denoiser):
    # Why the prior offers it: against fresh samples of the data, the mean is closer than an independent draw,
    # in squared error (tr Sigma against 2 tr Sigma) and here in cosine as well.
    truth = exact_samples(MU, SIGMA, 4000, seed=3)
    x_T = torch.randn(4000, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    point = predict_mmse(denoiser, x_T, SCHED.grid(25))
    draws = sample_ddpm(denoiser, x_T, SCHED.grid(1000), generator=torch.Generator().manual_seed(5))  # exact draws
    mse_point = (point - truth).pow(2).sum(1).mean().item()
    mse_draws = (draws - truth).pow(2).sum(1).mean().item()
    trace = SIGMA.trace().item()
    assert abs(mse_point / trace - 1) < 0.06 and abs(mse_draws / trace - 2) < 0.06, (mse_point, mse_draws, trace)
    cos = torch.nn.functional.cosine_similarity
    assert cos(point, truth).mean() > cos(draws, truth).mean() + 0.05


def test_float32_runs_and_keeps_dtype(denoiser):
    out = sample_dpmpp_2m(denoiser, torch.randn(3, 8), SCHED.grid(10))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_inputs_raise_value_errors(denoiser):
    grid = SCHED.grid(5)
    with pytest.raises(ValueError, match="floating"):
        sample_ddim(denoiser, torch.zeros(2, 8, dtype=torch.int64), grid)
    with pytest.raises(ValueError, match=r"\(B, \.\.\.\)"):
        sample_ddim(denoiser, torch.zeros(8), grid)
    with pytest.raises(ValueError, match="TimestepGrid"):
        sample_ddim(denoiser, torch.zeros(2, 8), [999, 0])
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample_ddpm(denoiser, torch.zeros(3, 8), grid, generator=generators_from_seeds([1, 2]))
    for eta in (-1.0, float("inf"), float("nan")):  # inf once drew black images
        with pytest.raises(ValueError, match="eta must be a finite number"):
            sample_ddim(denoiser, torch.zeros(2, 8), grid, eta=eta)
    with pytest.raises(ValueError, match="'euler'"):
        get_sampler("euler")
    with pytest.raises(ValueError, match="'medium'"):
        sample_ddpm(denoiser, torch.zeros(2, 8), grid, variance="medium")
    with pytest.raises(ValueError, match=r"x0 \(2, 4\).*x \(2, 8\)"):
        sample_ddim(lambda x, t: denoiser(x, t)._replace(x0=x[:, :4]), torch.zeros(2, 8), grid)


def _with_eps_error(denoiser, size: float):
    """The exact denoiser with a small smooth error added to eps (x0 re-derived), as a trained eps-model has."""
    from unclip.diffusion import Denoised

    def den(x, t):
        eps = denoiser(x, t).eps + size * torch.sin(3 * x)
        a = SCHED.alpha_bar[t].to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return Denoised((x - (1 - a).sqrt() * eps) / a.sqrt(), eps, None)

    return den


@pytest.mark.parametrize("eps_error", [0.0, 1e-3])
def test_inversion_stops_short_of_the_terminal_step_where_x0_estimates_blow_up(denoiser, eps_error):
    # At T - 1 the cosine schedule has alpha_bar = 2e-9: x0 = (x - sigma eps) / alpha multiplies an eps error
    # of 1e-3 by 2e4, the clamp saturates it, and the first DDIM step is many-to-one, so no inversion undoes it
    # (the bundled decoder's case; SamplingSettings.inversion_strength). Stopping at 0.95 T it inverts exactly.
    from unclip.diffusion import clamp_x0

    x0 = exact_samples(MU, SIGMA, 256, seed=5)
    lim = 1.5 * x0.abs().max().item()  # a data range that holds every sample, like [-1, 1] for images
    den = clamp_x0(_with_eps_error(denoiser, eps_error), SCHED, -lim, lim)
    errors = {}
    for strength in (1.0, 0.95):
        grid = SCHED.grid_below(50, strength)
        rec = sample_ddim(den, invert_ddim(den, x0, grid, refine=4), grid)
        errors[strength] = ((rec - x0).norm() / x0.norm()).item()
    assert errors[0.95] < 1e-5, errors
    if eps_error:
        assert errors[1.0] > 0.03, errors
    else:  # the exact denoiser's x0 is exact even there: the terminal step alone is harmless
        assert errors[1.0] < 1e-5, errors


def test_step_listener_hears_every_step_of_every_sampler_in_its_context(denoiser):
    from unclip.diffusion import listen_to_steps

    x = randn((4, MU.numel()), generators_from_seeds(range(4)))
    heard = []
    with listen_to_steps(lambda name, done, total: heard.append((name, done, total))):
        sample_ddim(denoiser, x, SCHED.grid(5))
        invert_ddim(denoiser, x, SCHED.grid(3))
        get_sampler("dpmpp_2m")(denoiser, x, SCHED.grid(4))
    assert heard == [("DDIM", k, 5) for k in range(1, 6)] + [("DDIM inversion", k, 3) for k in range(1, 4)] + [
        ("DPM-Solver++(2M)", k, 4) for k in range(1, 5)
    ]
    sample_ddpm(denoiser, x, SCHED.grid(3))  # outside the context: nobody listens
    assert len(heard) == 12
    from unclip.diffusion import sampling_stage

    with listen_to_steps(lambda name, done, total: heard.append(name)), sampling_stage("decoder"):
        sample_ddpm(denoiser, x, SCHED.grid(2))
    assert heard[-2:] == ["decoder · DDPM", "decoder · DDPM"]
