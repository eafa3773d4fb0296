"""Small shape-agnostic helpers shared by the diffusion modules (STYLE.md practice 6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from unclip.transfers import to_device

Generators = torch.Generator | Sequence[torch.Generator] | None


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Give a per-sample vector ``(B,)`` trailing singleton dims so it broadcasts against an ``ndim`` tensor."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of {v.ndim} dims against one of {ndim} dims")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every non-batch dim: the same loss code serves (B, D) and (B, C, H, W)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def check_sample(x: Tensor, name: str = "x") -> None:
    """Samplers accept a floating tensor with a batch dim and at least one data dim."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (B, ...) with at least one data dim, got {tuple(x.shape)}")


def randn(
    shape: Sequence[int],
    generator: Generators = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Standard normal noise of ``shape`` (batch first).

    With a sequence of generators, sample ``i`` is drawn from ``generator[i]`` alone, so it depends on seed
    ``i`` only and not on the batch size (DESIGN.md §2 contracts; STYLE.md practice 8).
    """
    shape = tuple(shape)
    if generator is None:
        return torch.randn(shape, dtype=dtype, device=device)
    if isinstance(generator, torch.Generator):
        # Draw on the generator's own device (the CPU by convention), then move: a CPU generator cannot fill a
        # CUDA tensor, and drawing on the CPU keeps the numbers independent of the target device.
        return to_device(torch.randn(shape, generator=generator, dtype=dtype, device=generator.device), device)
    generators = list(generator)
    if len(generators) != shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}; expected one per sample")
    draws = [torch.randn(shape[1:], generator=g, dtype=dtype, device=g.device) for g in generators]
    if len({d.device for d in draws}) == 1:  # one copy for the batch: a sampler step then waits for nothing
        return to_device(torch.stack(draws, dim=0), device)
    return torch.stack([d.to(device) for d in draws], dim=0)


def randn_like(x: Tensor, generator: Generators = None) -> Tensor:
    return randn(x.shape, generator, dtype=x.dtype, device=x.device)


def generators_from_seeds(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded independently: the image for seed ``s`` is the same in any batch."""
    bad = next((s for s in seeds if not -(2**63) <= int(s) < 2**64), None)
    if bad is not None:  # torch's own message ("Overflow when unpacking long long") names neither seed nor range
        raise ValueError(f"seed {int(bad)} is out of range: torch generators take integers from -2**63 to 2**64 - 1")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
