import math

import pytest
import torch
from torch import nn

from unclip.diffusion import PREDICTIONS, DiffusionLoss, NoiseSchedule, Parameterization, from_x0_eps, to_x0_eps
from unclip.diffusion.losses import discretized_gaussian_log_likelihood, min_snr_weight, normal_kl

SCHED = NoiseSchedule.named("cosine")


class Oracle(nn.Module):
    """Knows x0 and the noise, so it can output the exact target of any parameterization."""

    def __init__(self, x0, noise, prediction, extra=None):
        super().__init__()
        self.x0, self.noise, self.prediction, self.extra = x0, noise, prediction, extra

    def forward(self, x_t, t):
        out = from_x0_eps(self.prediction, self.x0, self.noise, SCHED.alpha_bar[t])
        return out if self.extra is None else torch.cat([out, self.extra], 1)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_exact_target_gives_zero_loss_and_wrong_one_does_not(prediction):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, 4, 4, generator=g)
    noise = noise.double()
    loss = DiffusionLoss(SCHED, Parameterization(prediction))
    out = loss(Oracle(x0, noise, prediction), x0, noise=noise, generator=g)
    assert out.loss.shape == (8,) and out.loss.abs().max().item() < 1e-20
    wrong = "x0" if prediction != "x0" else "eps"
    assert loss(Oracle(x0, noise, wrong), x0, noise=noise, generator=g).loss.min().item() > 1e-4


def test_timesteps_are_uniform():
    loss = DiffusionLoss(SCHED, Parameterization())
    t = loss.sample_t(200_000, torch.Generator().manual_seed(0))
    counts = torch.bincount(t // 100, minlength=10).double()  # ten bins of 100 timesteps
    chi2 = ((counts - 20_000) ** 2 / 20_000).sum().item()
    assert t.min().item() == 0 and t.max().item() == 999
    assert chi2 < 27.9  # 99.9th percentile of chi² with 9 degrees of freedom


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    m1, m2, lv1, lv2 = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(4))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), ref, atol=1e-12)


@pytest.mark.parametrize(("mean", "log_scale"), [(0.0, math.log(0.3)), (0.7, math.log(0.01)), (-1.2, 0.5)])
def test_discretized_likelihood_is_a_distribution_over_256_levels(mean, log_scale):
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale))
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    assert levels[logp.argmax()].item() == pytest.approx(max(-1.0, min(1.0, mean)), abs=2 / 255)


def test_vlb_is_zero_for_the_true_posterior_and_positive_otherwise():
    # With x0 known exactly (oracle eps) and var_frac = 0 (log variance = log beta~), the model's step equals
    # the true posterior q(x_{t-1} | x_t, x0), so the KL term vanishes for every t > 0.
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randn(16, 6, generator=g).double()
    t = torch.randint(1, 1000, (16,), generator=g)
    loss = DiffusionLoss(SCHED, Parameterization("eps", learned_variance=True), discretized_t0=False)
    exact = loss(Oracle(x0, noise, "eps", extra=-torch.ones_like(x0)), x0, t=t, noise=noise)
    assert exact.vlb.abs().max().item() < 1e-9
    assert torch.allclose(exact.loss, exact.mse)
    off = loss(Oracle(x0, noise, "eps", extra=torch.ones_like(x0)), x0, t=t, noise=noise)  # variance = beta
    assert off.vlb.min().item() > 0


def test_vlb_trains_only_the_variance():
    # Stop-gradient on the mean (improved DDPM §3.1): the VLB term alone sends no gradient to the mean half.
    x0 = torch.randn(4, 6)
    out = torch.zeros(4, 12, requires_grad=True)
    loss = DiffusionLoss(SCHED, Parameterization("eps", learned_variance=True), discretized_t0=False)
    res = loss(lambda x_t, t: out * 1.0, x0, t=torch.tensor([0, 5, 500, 999]))
    res.vlb.sum().backward()
    assert out.grad[:, :6].abs().max().item() == 0.0
    assert out.grad[:, 6:].abs().max().item() > 0.0


def test_training_a_small_network_lowers_the_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))

    def model(x_t, t):
        return net(torch.cat([x_t, (t.float() / 1000)[:, None]], 1))

    loss_fn = DiffusionLoss(SCHED, Parameterization("eps"))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    data = torch.tensor([[1.0, -0.5]]) + 0.1 * torch.randn(4096, 2)
    g = torch.Generator().manual_seed(0)
    eval_t = torch.randint(0, 1000, (4096,), generator=g)
    eval_noise = torch.randn(4096, 2, generator=g)

    def held_out():
        with torch.no_grad():
            return loss_fn(model, data, t=eval_t, noise=eval_noise).loss.mean().item()

    before = held_out()
    for _ in range(300):
        batch = data[torch.randint(0, 4096, (256,), generator=g)]
        opt.zero_grad()
        loss_fn(model, batch, generator=g).loss.mean().backward()
        opt.step()
    assert held_out() < 0.5 * before


def test_loss_input_errors():
    loss = DiffusionLoss(SCHED, Parameterization())
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(2, 4\)"):
        loss(lambda x, t: x[:, :3], torch.zeros(2, 4))
    with pytest.raises(ValueError, match="floating"):
        loss(lambda x, t: x, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        loss(lambda x, t: x, torch.zeros(2, 4), t=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="vlb_weight"):
        DiffusionLoss(SCHED, Parameterization(), vlb_weight=-1)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weights_every_target_as_min_snr_times_the_x0_error(prediction):
    # Hang et al. 2023: whatever the network predicts, the weighted term is min(SNR, γ)·||x̂0 − x0||², with x̂0
    # the x0 its output implies. Timesteps span both sides of SNR = γ.
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(64, 3, 4, 4, generator=g).double(), torch.randn(64, 3, 4, 4, generator=g).double()
    t = torch.linspace(0, 999, 64).long()
    out = torch.randn(64, 3, 4, 4, generator=g).double()
    gamma = 5.0
    loss = DiffusionLoss(SCHED, Parameterization(prediction), weighting="min_snr", min_snr_gamma=gamma)
    res = loss(lambda x_t, t_: out, x0, t=t, noise=noise)
    ab = SCHED.alpha_bar[t].double()
    x_t = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * noise
    x0_hat, _ = to_x0_eps(prediction, out, x_t, ab)
    snr = ab / (1 - ab)
    expected = snr.clamp(max=gamma) * ((x0_hat - x0) ** 2).mean(dim=(1, 2, 3))
    assert (snr > gamma).any() and (snr < gamma).any()
    assert torch.allclose(res.loss, expected, rtol=1e-9, atol=1e-12)
    # The logged mse stays the unweighted regression term, and uniform weighting leaves the loss equal to it.
    assert torch.allclose(res.mse, ((out - from_x0_eps(prediction, x0, noise, ab)) ** 2).mean(dim=(1, 2, 3)))
    assert torch.equal(DiffusionLoss(SCHED, Parameterization(prediction))(lambda x_t, t_: out, x0, t=t,
                                                                           noise=noise).loss, res.mse)  # fmt: skip


def test_min_snr_weight_for_eps_is_one_below_gamma_and_gamma_over_snr_above():
    ab = torch.tensor([1e-6, 0.5, 5 / 6, 0.99], dtype=torch.float64)  # SNR 1e-6, 1, 5, 99
    w = min_snr_weight(ab, "eps", 5.0)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 1.0, 5 / 99], dtype=torch.float64))
    assert torch.allclose(min_snr_weight(ab, "x0", 5.0), torch.tensor([1e-6 / (1 - 1e-6), 1.0, 5.0, 5.0]).double())


def test_min_snr_leaves_the_variational_term_alone():
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(16, 6, generator=g, dtype=torch.float64)
    out = torch.randn(16, 12, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 999, 16).long()
    kw = {"t": t, "noise": torch.randn(16, 6, generator=g).double()}
    param = Parameterization("eps", learned_variance=True)
    uniform = DiffusionLoss(SCHED, param, discretized_t0=False)(lambda x_t, t_: out, x0, **kw)
    weighted = DiffusionLoss(SCHED, param, discretized_t0=False, weighting="min_snr")(lambda x_t, t_: out, x0, **kw)
    w = min_snr_weight(SCHED.alpha_bar[t].double(), "eps", 5.0)
    assert torch.allclose(weighted.vlb, uniform.vlb)
    assert torch.allclose(weighted.loss - w * weighted.mse, uniform.loss - uniform.mse)


@pytest.mark.parametrize(("weighting", "gamma", "match"), [("snr", 5.0, "one of"), ("min_snr", 0.0, "positive"),
                                                           ("min_snr", float("nan"), "positive")])  # fmt: skip
def test_bad_weighting_is_refused(weighting, gamma, match):
    with pytest.raises(ValueError, match=match):
        DiffusionLoss(SCHED, Parameterization(), weighting=weighting, min_snr_gamma=gamma)
