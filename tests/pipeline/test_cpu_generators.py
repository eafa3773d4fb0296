"""Random draws with a generator happen on the generator's device (the CPU) and are then moved.

A CPU ``torch.Generator`` cannot fill a CUDA tensor ("Expected a 'cuda' device type for generator but found
'cpu'"). No GPU here, so a checker wrapped around torch's random functions fails any call whose explicit
``device=`` (or ``*_like`` source tensor) is not on the generator's device; the "meta" device stands in for
CUDA as the target of the helpers and samplers (torch itself does not reject a CPU generator for meta).
"""

import pytest
import torch
from tiny_stack import tiny_pipeline

from unclip.diffusion import NoiseSchedule, generators_from_seeds, randn, randn_like, sample_ddim, sample_ddpm
from unclip.diffusion.samplers import Denoised
from unclip.pipeline import interpolate, text_diff, variations

_FACTORIES = ("randn", "rand", "randint", "randperm", "normal")
_LIKE = ("randn_like", "rand_like", "randint_like")


def _device_type(device) -> str:
    return torch.device(device).type


@pytest.fixture
def checker(monkeypatch):
    seen: list[str] = []

    def check(name: str, generator, target) -> None:
        if generator is None or isinstance(generator, (list, tuple)):
            return
        seen.append(name)
        if target is not None and _device_type(target) != generator.device.type:
            raise AssertionError(
                f"torch.{name} draws on {_device_type(target)!r} with a {generator.device.type!r} generator"
            )

    def wrap_factory(name, fn):
        def wrapped(*args, **kwargs):
            check(name, kwargs.get("generator"), kwargs.get("device"))
            return fn(*args, **kwargs)

        return wrapped

    def wrap_like(name, fn):
        def wrapped(x, *args, **kwargs):
            check(name, kwargs.get("generator"), kwargs.get("device", x.device))
            return fn(x, *args, **kwargs)

        return wrapped

    def wrap_multinomial(fn):
        def wrapped(probs, *args, **kwargs):
            check("multinomial", kwargs.get("generator"), probs.device)
            return fn(probs, *args, **kwargs)

        return wrapped

    def wrap_method(name, fn):
        def wrapped(self, *args, **kwargs):
            check(name, kwargs.get("generator"), self.device)
            return fn(self, *args, **kwargs)

        return wrapped

    for name in _FACTORIES:
        monkeypatch.setattr(torch, name, wrap_factory(name, getattr(torch, name)))
    for name in _LIKE:
        monkeypatch.setattr(torch, name, wrap_like(name, getattr(torch, name)))
    monkeypatch.setattr(torch, "multinomial", wrap_multinomial(torch.multinomial))
    for name in ("normal_", "uniform_", "bernoulli_", "exponential_", "random_"):
        monkeypatch.setattr(torch.Tensor, name, wrap_method(name, getattr(torch.Tensor, name)))
    return seen


def test_the_checker_catches_a_cpu_generator_drawing_on_another_device(checker):
    with pytest.raises(AssertionError, match="generator"):
        torch.randn(2, generator=torch.Generator(), device="meta")
    with pytest.raises(AssertionError, match="generator"):
        torch.randn_like(torch.empty(2, device="meta"), generator=torch.Generator())


@pytest.mark.parametrize("per_sample", [False, True])
def test_randn_draws_on_the_cpu_and_moves(checker, per_sample):
    gens = generators_from_seeds([3, 4]) if per_sample else torch.Generator().manual_seed(3)
    out = randn((2, 5), gens, device="meta")
    assert out.device.type == "meta" and out.shape == (2, 5)
    like = randn_like(torch.empty(2, 5, device="meta"), generators_from_seeds([3, 4]) if per_sample else gens)
    assert like.device.type == "meta"
    assert checker, "the draws went through the checker"
    # The CPU numbers are the generators' own stream, unchanged.
    ref = torch.stack([torch.randn(5, generator=g) for g in generators_from_seeds([3, 4])])
    assert torch.equal(randn((2, 5), generators_from_seeds([3, 4]), device="cpu"), ref)


class _ZeroDenoiser:
    def __call__(self, x, t):
        zero = torch.zeros_like(x)
        return Denoised(x0=zero, eps=zero)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_stochastic_samplers_accept_cpu_generators_for_another_device(checker, sampler, monkeypatch):
    import unclip.diffusion.samplers as samplers

    monkeypatch.setattr(samplers, "_denoise", lambda den, x, t: den(x, t))
    x = torch.empty(2, 3, device="meta")
    grid = NoiseSchedule.named("cosine").grid(3)
    if sampler == "ddpm":
        out = sample_ddpm(_ZeroDenoiser(), x, grid, generator=generators_from_seeds([0, 1]))
    else:
        out = sample_ddim(_ZeroDenoiser(), x, grid, generator=generators_from_seeds([0, 1]), eta=1.0)
    assert out.device.type == "meta"
    assert checker


def test_pipeline_paths_draw_every_seeded_number_on_the_generators_device(checker):
    pipe = tiny_pipeline()
    source, other = pipe(["a red circle", "a blue square"], seed=0).images
    variations(pipe, source, n=2, eta=1.0, seed=3)
    interpolate(pipe, source, other, frames=2, latent="fixed")
    text_diff(pipe, source, "a red circle", "a blue circle", frames=2, max_theta=0.5)
    assert "randn" in checker
