"""CaptionCachedPrior: the caption's keys and values computed once per sampling run, with the model's results."""

import pytest
import torch
from prior_data import synthetic_pairs
from test_diffusion_prior import fitted

import unclip.prior.sampling as sampling_module
from unclip.prior import sample_diffusion_prior
from unclip.prior.diffusion_prior import CaptionCachedPrior


def _perturbed():
    model = fitted()
    with torch.no_grad():  # random weights everywhere, so every position matters to the output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _conditioning(seed, n=5, length=4):
    _, z_t, tokens, mask = synthetic_pairs(n, seed=seed)
    keep = torch.tensor([True, False, True, True, False])[:n]
    return {"z_t": z_t, "tokens": tokens[:, :length], "mask": mask[:, :length], "keep": keep}  # shorter than text_len


def test_cached_steps_equal_the_full_forward_and_the_caption_runs_once(monkeypatch):
    model = _perturbed()
    cached = CaptionCachedPrior(model)
    built = []
    caption_part = model.caption_part
    monkeypatch.setattr(model, "caption_part", lambda *a, **k: built.append(1) or caption_part(*a, **k))
    cond = _conditioning(0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in (999, 500, 20, 0):  # steps of one run: the same conditioning tensors, new x_t and t
            x = torch.randn(5, 16, generator=g)
            steps = torch.full((5,), t)
            torch.testing.assert_close(cached(x, steps, **cond), model(x, steps, **cond), rtol=1e-5, atol=1e-5)
        assert len(built) - 4 == 1  # the full forwards built theirs; the cached prior built its own once
        other = _conditioning(1)  # new tensors: the cache is rebuilt, not reused
        x = torch.randn(5, 16, generator=g)
        steps = torch.full((5,), 300)
        got = cached(x, steps, **other)
        torch.testing.assert_close(got, model(x, steps, **other), rtol=1e-5, atol=1e-5)
        assert (got - model(x, steps, **cond)).abs().max() > 1e-3  # the conditioning does change the output
        with pytest.raises(ValueError, match=r"x_t must have shape \(5, 16\)"):
            cached(torch.zeros(3, 16), torch.zeros(3, dtype=torch.long), **other)


def test_with_gradients_or_a_compiled_forward_it_is_the_model_itself():
    model = _perturbed()
    cond = _conditioning(0)
    x, t = torch.randn(5, 16), torch.full((5,), 100)
    out = CaptionCachedPrior(model)(x, t, **cond)
    assert out.requires_grad  # the full forward, which training differentiates
    calls = []
    model.forward = lambda *a, **k: calls.append(1) or type(model).forward(model, *a, **k)  # as compile replaces it
    with torch.no_grad():
        CaptionCachedPrior(model)(x, t, **cond)
    assert calls == [1]


def test_sampling_with_the_cache_gives_the_samples_without_it(monkeypatch):
    model = _perturbed()
    _, z_t, tokens, mask = synthetic_pairs(3, seed=4)
    kwargs = {
        "guidance_scale": 3.0,
        "best_of": 2,
        "steps": 8,
        "generator": [torch.Generator().manual_seed(s) for s in range(3)],
    }
    with torch.no_grad():
        cached = sample_diffusion_prior(model, z_t, tokens, mask, **kwargs)
        monkeypatch.setattr(sampling_module, "CaptionCachedPrior", lambda m: m)
        kwargs["generator"] = [torch.Generator().manual_seed(s) for s in range(3)]
        plain = sample_diffusion_prior(model, z_t, tokens, mask, **kwargs)
    torch.testing.assert_close(cached.candidates, plain.candidates, rtol=1e-4, atol=1e-5)
    assert torch.equal(cached.chosen, plain.chosen)
