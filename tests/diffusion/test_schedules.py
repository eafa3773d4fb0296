import math
import re

import pytest
import torch

from unclip.diffusion import NoiseSchedule


def test_cosine_alpha_bar_matches_closed_form():
    # Nichol & Dhariwal Eq. 17: alpha_bar(t) = f(t)/f(0) with f(u) = cos²((u/T + s)/(1 + s) π/2), exact until
    # betas hit the 0.999 clip at the very end.
    sched = NoiseSchedule.named("cosine")

    def f(u):
        return math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 10, 250, 500, 750, 900, 980):
        assert sched.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-12)
    assert sched.betas.max().item() == pytest.approx(0.999)


def test_linear_schedule_endpoints_and_scaling():
    sched = NoiseSchedule.named("linear")
    assert sched.betas[0].item() == pytest.approx(1e-4)
    assert sched.betas[-1].item() == pytest.approx(0.02)
    # Fewer steps keep the same total noise: alpha_bar at the end stays close (Ho et al. scaling).
    short = NoiseSchedule.named("linear", 100)
    assert short.alpha_bar[-1].item() == pytest.approx(sched.alpha_bar[-1].item(), rel=0.5)
    assert short.alpha_bar[-1].item() < 1e-3


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_alpha_bar_strictly_decreasing_in_unit_interval(name):
    ab = NoiseSchedule.named(name).alpha_bar
    assert ab.dtype == torch.float64
    assert bool((ab[1:] < ab[:-1]).all())
    assert 0 < ab[-1].item() < 1e-3 and 0.999 < ab[0].item() < 1


def test_linspace_spacing_includes_both_ends_like_the_paper():
    t = NoiseSchedule.named("cosine").timesteps(250)
    assert t[0].item() == 999 and t[-1].item() == 0 and t.numel() == 250
    assert bool((t[:-1] > t[1:]).all())
    gaps = (t[:-1] - t[1:]).tolist()
    assert set(gaps) <= {4, 5}  # evenly spread: 999 / 249 = 4.01


def test_leading_and_trailing_spacings():
    sched = NoiseSchedule.named("cosine")
    assert sched.timesteps(4, "leading").tolist() == [750, 500, 250, 0]
    assert sched.timesteps(4, "trailing").tolist() == [999, 749, 499, 249]
    assert sched.timesteps(1000, "leading").tolist() == list(range(999, -1, -1))
    assert sched.timesteps(1).tolist() == [999]


def test_grid_alpha_bar_next_lands_on_clean_data():
    grid = NoiseSchedule.named("cosine").grid(5)
    nxt = grid.alpha_bar_next()
    assert nxt[-1].item() == 1.0
    assert torch.equal(nxt[:-1], grid.alpha_bar[1:])


@pytest.mark.parametrize("n", [0, -3, 1001, 2.5, True])
def test_bad_step_counts_are_rejected_with_the_value(n):
    with pytest.raises(ValueError, match=re.escape(str(n))):
        NoiseSchedule.named("cosine").grid(n)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match=r"'sigmoid'.*cosine, linear"):
        NoiseSchedule.named("sigmoid")
    with pytest.raises(ValueError, match="'karras'"):
        NoiseSchedule.named("cosine").timesteps(10, "karras")
    with pytest.raises(ValueError, match="positive integer"):
        NoiseSchedule.named("cosine", 0)


def test_grid_from_explicit_timesteps_validates():
    sched = NoiseSchedule.named("linear")
    assert sched.grid_from([0, 500, 999]).t.tolist() == [999, 500, 0]
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        sched.grid_from([1000])
    with pytest.raises(ValueError, match="distinct"):
        sched.grid_from([5, 5])
    with pytest.raises(ValueError, match="at least one"):
        sched.grid_from([])


def test_grid_below_starts_at_the_strength_and_is_the_full_grid_at_one():
    from unclip.diffusion import NoiseSchedule

    schedule = NoiseSchedule.named("cosine")
    for n in (1, 7, 10, 50):
        assert torch.equal(schedule.grid_below(n, 1.0).t, schedule.grid(n).t)
    grid = schedule.grid_below(10, 0.3)
    assert grid.t[0].item() == round(0.3 * 999) and grid.t[-1].item() == 0 and len(grid) == 10
    assert bool((grid.t[:-1] > grid.t[1:]).all())
    assert torch.equal(grid.alpha_bar, schedule.alpha_bar[grid.t])
    assert schedule.grid_below(50, 0.01).t.tolist() == list(range(10, -1, -1))  # coinciding steps merged
    with pytest.raises(ValueError, match="strength must lie in"):
        schedule.grid_below(10, 0.0)
