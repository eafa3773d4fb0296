import pytest
import torch

from unclip.diffusion import (
    PREDICTIONS,
    ModelDenoiser,
    NoiseSchedule,
    Parameterization,
    clamp_x0,
    from_x0_eps,
    to_x0_eps,
)
from unclip.diffusion.parameterization import posterior_log_variance_bounds, split_learned_variance


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("src", PREDICTIONS)
@pytest.mark.parametrize("dst", PREDICTIONS)
def test_round_trips_in_float64_at_every_timestep(schedule, src, dst):
    sched = NoiseSchedule.named(schedule)
    T = sched.num_steps
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(T, 3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(T, 3, 4, generator=g, dtype=torch.float64)
    ab = sched.alpha_bar  # one sample per timestep: every t is covered
    a, s = ab.sqrt()[:, None, None], (1 - ab).sqrt()[:, None, None]
    x_t = a * x0 + s * eps

    pred = from_x0_eps(src, x0, eps, ab)
    x0_back, eps_back = to_x0_eps(src, pred, x_t, ab)
    assert (x0_back - x0).abs().max().item() < 1e-10
    assert (eps_back - eps).abs().max().item() < 1e-10
    # src -> (x0, eps) -> dst -> (x0, eps) -> src returns the original prediction.
    other = from_x0_eps(dst, x0_back, eps_back, ab)
    again = from_x0_eps(src, *to_x0_eps(dst, other, x_t, ab), ab)
    assert (again - pred).abs().max().item() < 1e-10


def test_v_matches_its_definition():
    ab = torch.tensor([0.3], dtype=torch.float64)
    x0, eps = torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[-1.0]], dtype=torch.float64)
    v = from_x0_eps("v", x0, eps, ab)
    assert v.item() == pytest.approx(0.3**0.5 * -1.0 - 0.7**0.5 * 2.0, abs=1e-14)


def test_learned_variance_split_maps_to_unit_interval():
    out = torch.tensor([[1.0, 2.0, -1.0, 1.0]])
    pred, frac = split_learned_variance(out)
    assert pred.tolist() == [[1.0, 2.0]] and frac.tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="even size"):
        split_learned_variance(torch.zeros(2, 3))


def test_posterior_log_variance_bounds_ordering():
    ab = NoiseSchedule.named("cosine").alpha_bar
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    log_small, log_large = posterior_log_variance_bounds(ab, ab_prev)
    assert torch.isfinite(log_small).all() and torch.isfinite(log_large).all()
    # beta~ <= beta always (Ho et al. Eq. 7), and t = 0's clipped value equals t = 1's.
    assert bool((log_small <= log_large + 1e-12).all())
    assert log_small[0].item() == pytest.approx(log_small[1].item())


class AffineNet(torch.nn.Module):
    """Raw output = w * x_t + b (+ a learned-variance half): enough to check the wrapper's arithmetic."""

    def __init__(self, learned_variance=False):
        super().__init__()
        self.learned_variance = learned_variance

    def forward(self, x, t, shift=None):
        out = 0.5 * x + (0 if shift is None else shift)
        return torch.cat([out, torch.zeros_like(out)], 1) if self.learned_variance else out


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_model_denoiser_reads_the_network_per_parameterization(prediction):
    sched = NoiseSchedule.named("cosine")
    den = ModelDenoiser(AffineNet(), sched, Parameterization(prediction))
    x = torch.randn(4, 6, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    d = den(x, t, {"shift": torch.ones(4, 6, dtype=torch.float64)})
    out = 0.5 * x + 1
    expected = to_x0_eps(prediction, out, x, sched.alpha_bar[t])
    assert torch.allclose(d.x0, expected[0]) and torch.allclose(d.eps, expected[1])
    assert d.var_frac is None


def test_model_denoiser_learned_variance_and_shape_errors():
    sched = NoiseSchedule.named("cosine")
    den = ModelDenoiser(AffineNet(learned_variance=True), sched, Parameterization("eps", learned_variance=True))
    d = den(torch.randn(2, 3, 4, 4), torch.tensor([3, 4]))
    assert d.x0.shape == (2, 3, 4, 4) and torch.equal(d.var_frac, torch.full((2, 3, 4, 4), 0.5))
    plain = ModelDenoiser(AffineNet(learned_variance=True), sched, Parameterization("eps"))
    with pytest.raises(ValueError, match=r"output has shape \(2, 6, 4, 4\) but x_t has \(2, 3, 4, 4\)"):
        plain(torch.randn(2, 3, 4, 4), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="'score'"):
        Parameterization("score")


def test_clamp_x0_clips_and_keeps_the_forward_relation():
    sched = NoiseSchedule.named("cosine")
    den = ModelDenoiser(lambda x, t: 3 * x, sched, Parameterization("x0"))
    clamped = clamp_x0(lambda x, t: den(x, t), sched)
    x = torch.randn(5, 7, dtype=torch.float64) * 2
    t = torch.full((5,), 300)
    d = clamped(x, t)
    assert d.x0.abs().max().item() <= 1.0 and (d.x0.abs() == 1.0).any()
    ab = sched.alpha_bar[300]
    assert torch.allclose(ab.sqrt() * d.x0 + (1 - ab).sqrt() * d.eps, x, atol=1e-12)
