"""Gradient guidance on x̂0 (unclip.diffusion.gradient_guidance): the update rule, per-sample gradients, the clamp
the objective reads through, and the embedding objective's ascent."""

import pytest
import torch

from unclip.diffusion import NoiseSchedule
from unclip.diffusion.gradient_guidance import (
    embedding_objective,
    noised_embedding_objective,
    noised_gradient_guidance,
    x0_gradient_guidance,
)
from unclip.diffusion.parameterization import Denoised


def _fixed_denoiser(x0: torch.Tensor, schedule: NoiseSchedule):
    """A denoiser that always estimates ``x0`` (eps consistent with it), so the update is all that changes."""

    def den(x: torch.Tensor, t: torch.Tensor) -> Denoised:
        ab = schedule.alpha_bar[t].view(-1, 1, 1, 1).float()
        return Denoised(x0, (x - ab.sqrt() * x0) / (1 - ab).sqrt(), None)

    return den


def _linear_denoiser(c: float, schedule: NoiseSchedule):
    """x̂0(x_t) = c x_t: a denoiser whose Jacobian is known (c I), with eps consistent with it."""

    def den(x_t: torch.Tensor, t: torch.Tensor) -> Denoised:
        ab = schedule.alpha_bar[t].view(-1, 1, 1, 1).float()
        return Denoised(c * x_t, (x_t - ab.sqrt() * c * x_t) / (1 - ab).sqrt(), None)

    return den


@pytest.fixture
def setting():
    g = torch.Generator().manual_seed(0)
    schedule = NoiseSchedule.named("cosine")
    x0 = torch.rand(3, 3, 4, 4, generator=g) * 1.2 - 0.6
    x = torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([100, 500, 900])
    return schedule, x0, x, t


def test_scale_zero_is_the_denoiser_itself(setting):
    schedule, x0, _, _ = setting
    den = _fixed_denoiser(x0, schedule)
    assert x0_gradient_guidance(den, schedule, lambda v: v.sum((1, 2, 3)), 0.0) is den


def test_quadratic_objective_moves_x0_toward_each_samples_target_and_eps_follows(setting):
    # f(x0) = -½‖x0 - y‖² per sample has gradient y - x0, so x̂0' = x̂0 + s (y - x̂0): a step of s toward y.
    schedule, x0, x, t = setting
    pull = lambda v: -0.5 * (v - y).pow(2).sum((1, 2, 3))  # noqa: E731
    y = torch.linspace(-0.5, 0.5, 3).view(3, 1, 1, 1).expand_as(x0).contiguous()
    s = 0.3
    den = x0_gradient_guidance(_fixed_denoiser(x0, schedule), schedule, pull, s)
    with torch.no_grad():  # samplers call denoisers without autograd; the gradient must still be taken
        out = den(x, t)
    torch.testing.assert_close(out.x0, x0 + s * (y - x0))
    ab = schedule.alpha_bar[t].view(-1, 1, 1, 1).float()
    torch.testing.assert_close(ab.sqrt() * out.x0 + (1 - ab).sqrt() * out.eps, x)  # x_t = α x̂0' + σ eps'


def test_objective_reads_the_clamped_estimate(setting):
    schedule, x0, x, t = setting
    x0 = x0.clone()
    x0[0, 0, 0, 0] = 1.5  # outside the data range: the clamp passes no gradient there
    y = torch.zeros_like(x0)
    pull = lambda v: -0.5 * (v - y).pow(2).sum((1, 2, 3))  # noqa: E731
    den = x0_gradient_guidance(_fixed_denoiser(x0, schedule), schedule, pull, 0.5)
    out = den(x, t)
    assert out.x0[0, 0, 0, 0] == 1.5
    torch.testing.assert_close(out.x0[0, 0, 0, 1], 0.5 * x0[0, 0, 0, 1])
    unclamped = x0_gradient_guidance(_fixed_denoiser(x0, schedule), schedule, pull, 0.5, clamp=None)
    torch.testing.assert_close(unclamped(x, t).x0[0, 0, 0, 0], torch.tensor(0.75))


def test_through_the_denoiser_the_step_follows_its_jacobian_weighted_by_the_noise(setting):
    # x̂0(x_t) = c x_t has Jacobian c I, so f = -½‖x̂0 - y‖² has ∇_{x_t} f = c (y - x̂0) and the module's rule gives
    # x̂0' = x̂0 + s σ_t² α_t c (y - x̂0): the x0 rule's step, scaled by the Jacobian and the noise weighting.
    schedule, _, x, t = setting
    c, s = 0.4, 0.7
    y = torch.full_like(x, 0.1)
    linear = _linear_denoiser(c, schedule)
    pull = lambda v: -0.5 * (v - y).pow(2).sum((1, 2, 3))  # noqa: E731
    den = x0_gradient_guidance(linear, schedule, pull, s, clamp=None, gradient="denoiser")
    with torch.no_grad():
        out = den(x, t)
    ab = schedule.alpha_bar[t].view(-1, 1, 1, 1).float()
    torch.testing.assert_close(out.x0, c * x + s * (1 - ab) * ab.sqrt() * c * (y - c * x))
    torch.testing.assert_close(ab.sqrt() * out.x0 + (1 - ab).sqrt() * out.eps, x)


@pytest.mark.parametrize("gradient", ["x0", "denoiser"])
def test_interval_guides_only_the_samples_whose_timestep_lies_in_it(setting, gradient):
    # t = 100, 500, 900 are the fractions 0.101, 0.501, 0.901 of the schedule: (0.3, 0.95) holds only the last two,
    # which get exactly the unlimited guidance, while the first gets the denoiser's own estimate.
    schedule, x0, x, t = setting
    den = _fixed_denoiser(x0, schedule) if gradient == "x0" else _linear_denoiser(0.4, schedule)
    x0 = den(x, t).x0
    pull = lambda v: -0.5 * v.pow(2).sum((1, 2, 3))  # noqa: E731
    full = x0_gradient_guidance(den, schedule, pull, 0.3, gradient=gradient)(x, t)
    part = x0_gradient_guidance(den, schedule, pull, 0.3, gradient=gradient, interval=(0.3, 0.95))(x, t)
    torch.testing.assert_close(part.x0[0], x0[0])
    torch.testing.assert_close(part.eps[0], den(x, t).eps[0])
    torch.testing.assert_close(part.x0[1:], full.x0[1:])
    assert (full.x0[0] - x0[0]).abs().max() > 1e-3  # the unlimited guidance moves the first sample too
    # the ends count as inside: (t + 1) / T = 0.501 exactly at t = 500
    edge = x0_gradient_guidance(den, schedule, pull, 0.3, gradient=gradient, interval=(0.501, 0.6))(x, t)
    torch.testing.assert_close(edge.x0[1], full.x0[1])


def test_outside_the_interval_the_objective_is_never_evaluated(setting):
    schedule, x0, x, _ = setting
    calls = []

    def counted(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return v.sum((1, 2, 3))

    den = x0_gradient_guidance(_fixed_denoiser(x0, schedule), schedule, counted, 1.0, interval=(0.5, 1.0))
    den(x, torch.full((3,), 100))
    assert calls == []
    den(x, torch.full((3,), 800))
    assert calls == [1]


def test_bad_scale_and_bad_objective_shape_are_refused(setting):
    schedule, x0, x, t = setting
    den = _fixed_denoiser(x0, schedule)
    with pytest.raises(ValueError, match=">= 0"):
        x0_gradient_guidance(den, schedule, lambda v: v.sum((1, 2, 3)), -1.0)
    with pytest.raises(ValueError, match="differentiates one of"):
        x0_gradient_guidance(den, schedule, lambda v: v.sum((1, 2, 3)), 1.0, gradient="x_t")
    for interval in [(0.5, 0.5), (0.6, 0.4), (-0.1, 1.0), (0.0, 1.2)]:
        with pytest.raises(ValueError, match="interval"):
            x0_gradient_guidance(den, schedule, lambda v: v.sum((1, 2, 3)), 1.0, interval=interval)
    with pytest.raises(RuntimeError, match="under torch"), torch.inference_mode():
        x0_gradient_guidance(den, schedule, lambda v: v.sum((1, 2, 3)), 1.0)(x, t)
    with pytest.raises(ValueError, match="one value per sample"):
        x0_gradient_guidance(den, schedule, lambda v: v.sum(), 1.0)(x, t)


def test_embedding_objective_is_the_cosine_and_a_small_step_raises_it():
    g = torch.Generator().manual_seed(1)
    proj = torch.randn(48, 8, generator=g)

    def encode(images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(images.flatten(1) @ proj)

    images = torch.rand(4, 3, 4, 4, generator=g) - 0.5
    target = torch.randn(4, 8, generator=g)
    f = embedding_objective(encode, target)
    torch.testing.assert_close(f(images), torch.nn.functional.cosine_similarity(encode(images), target, dim=-1))
    schedule = NoiseSchedule.named("cosine")
    den = x0_gradient_guidance(_fixed_denoiser(images, schedule), schedule, f, 1e-3)
    moved = den(torch.randn(4, 3, 4, 4, generator=g), torch.full((4,), 300)).x0
    assert bool((f(moved) > f(images)).all())  # gradient ascent on every sample


def test_noised_objective_moves_x0_by_its_x_t_gradient_weighted_by_the_noise(setting):
    # f(x_t, t) = <w_i, x_t> + t has gradient w_i with respect to x_t, so x̂0' = x̂0 + s σ_t² α_t w_i exactly, the
    # timestep reaches the objective, and the denoiser is not differentiated (its estimate is a constant here).
    schedule, x0, x, t = setting
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    seen = []

    def linear(v: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        seen.append(steps.clone())
        return (w * v).sum((1, 2, 3)) + steps.float()

    s = 0.8
    den = noised_gradient_guidance(_fixed_denoiser(x0, schedule), schedule, linear, s)
    with torch.no_grad():
        out = den(x, t)
    ab = schedule.alpha_bar[t].view(-1, 1, 1, 1).float()
    torch.testing.assert_close(out.x0, x0 + s * (1 - ab) * ab.sqrt() * w)
    torch.testing.assert_close(ab.sqrt() * out.x0 + (1 - ab).sqrt() * out.eps, x)
    assert torch.equal(seen[0], t)


def test_noised_guidance_interval_scale_zero_and_refusals(setting):
    schedule, x0, x, t = setting
    den = _fixed_denoiser(x0, schedule)
    calls = []

    def counted(v: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -0.5 * v.pow(2).sum((1, 2, 3))

    assert noised_gradient_guidance(den, schedule, counted, 0.0) is den
    part = noised_gradient_guidance(den, schedule, counted, 0.5, interval=(0.3, 0.95))(x, t)
    full = noised_gradient_guidance(den, schedule, counted, 0.5)(x, t)
    torch.testing.assert_close(part.x0[0], x0[0])  # t = 100 lies outside (0.3, 0.95)
    torch.testing.assert_close(part.x0[1:], full.x0[1:])
    calls.clear()
    noised_gradient_guidance(den, schedule, counted, 0.5, interval=(0.5, 1.0))(x, torch.full((3,), 100))
    assert calls == []
    with pytest.raises(ValueError, match="interval"):
        noised_gradient_guidance(den, schedule, counted, 0.5, interval=(0.6, 0.4))
    with pytest.raises(ValueError, match="one value per sample"):
        noised_gradient_guidance(den, schedule, lambda v, s: v.sum(), 0.5)(x, t)
    with pytest.raises(RuntimeError, match="under torch"), torch.inference_mode():
        noised_gradient_guidance(den, schedule, counted, 0.5)(x, t)


def test_noised_embedding_objective_is_the_cosine_of_the_tower_reading_x_t():
    g = torch.Generator().manual_seed(4)
    proj = torch.randn(48, 8, generator=g)

    def encode(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x_t.flatten(1) @ proj) * (1 + t.float()[:, None] / 1000)

    x, t = torch.randn(4, 3, 4, 4, generator=g), torch.tensor([0, 10, 500, 999])
    target = torch.randn(4, 8, generator=g)
    f = noised_embedding_objective(encode, target)
    torch.testing.assert_close(f(x, t), torch.nn.functional.cosine_similarity(encode(x, t), target, dim=-1))
