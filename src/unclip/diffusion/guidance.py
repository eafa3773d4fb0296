"""Classifier-free guidance as a combinator over denoisers (Ho & Salimans 2022; STYLE.md practice 5).

A conditional denoiser ``denoiser(x, t, cond) -> Denoised`` is turned into the ``(x, t)`` denoiser samplers
take. Several conditions with separate scales use a chain of nested conditionings, most general last::

    c_0 = nothing,  c_1 = first condition,  c_2 = first + second, ...,  c_K = all conditions
    D = D(c_0) + sum_k s_k (D(c_k) - D(c_{k-1}))

With one condition this is the usual ``D(∅) + s (D(c) - D(∅))``. For the decoder (§2.1), ``c_1`` holds z_i
and ``c_2`` adds the caption, so the image embedding and the text get their own scales; all scales 1 give
the fully conditional denoiser and all scales 0 the unconditional one. Every branch runs in one batched
forward pass. The combination is linear, so x0 and eps are guided alike; a learned variance is taken from
the fully conditional branch (as GLIDE does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from unclip.diffusion.parameterization import Denoised, Denoiser


class ConditionalDenoiser(Protocol):
    def __call__(self, x: Tensor, t: Tensor, cond: Any) -> Denoised: ...


def _batch_size(tree: Any) -> int | None:
    if isinstance(tree, Tensor):
        return tree.shape[0]
    if isinstance(tree, Mapping):
        sizes = [_batch_size(v) for v in tree.values()]
    elif isinstance(tree, (list, tuple)):
        sizes = [_batch_size(v) for v in tree]
    else:
        return None
    sizes = [s for s in sizes if s is not None]
    return sizes[0] if sizes else None


def cat_conditions(conds: Sequence[Any]) -> Any:
    """Concatenate condition trees (tensors, dicts, lists/tuples of them, or ``None``) along the batch dim.

    Every branch must have the same structure, so the network sees one batch of ``len(conds) * B``.
    """
    first = conds[0]
    if first is None:
        if any(c is not None for c in conds):
            raise ValueError("conditions differ in structure: some branches are None and others are not")
        return None
    if isinstance(first, Tensor):
        if not all(isinstance(c, Tensor) for c in conds):
            raise ValueError("conditions differ in structure: expected a tensor in every branch")
        shapes = {tuple(c.shape[1:]) for c in conds}
        if len(shapes) != 1:
            raise ValueError(f"condition tensors differ in shape across branches: {sorted(shapes)}")
        return torch.cat(list(conds), dim=0)
    if isinstance(first, Mapping):
        keys = set(first)
        if not all(isinstance(c, Mapping) and set(c) == keys for c in conds):
            raise ValueError(f"conditions differ in keys across branches; expected {sorted(keys)} in each")
        return {k: cat_conditions([c[k] for c in conds]) for k in first}
    if isinstance(first, (list, tuple)):
        if not all(isinstance(c, (list, tuple)) and len(c) == len(first) for c in conds):
            raise ValueError("conditions differ in structure: sequences of different lengths")
        return type(first)(cat_conditions([c[i] for c in conds]) for i in range(len(first)))
    if all(c == first for c in conds):  # plain Python values shared by every branch (flags, sizes)
        return first
    raise ValueError(f"cannot batch condition values of type {type(first).__name__} that differ across branches")


def guided(denoiser: ConditionalDenoiser, conds: Sequence[Any], scales: Sequence[float]) -> Denoiser:
    """Classifier-free guidance over the nested conditions ``conds = [c_0 (none), c_1, …, c_K]``.

    ``scales`` has one entry per condition (``K = len(conds) - 1``).
    """
    conds = list(conds)
    scales = [float(s) for s in scales]
    if len(conds) < 2:
        raise ValueError(f"guidance needs an unconditional branch and at least one condition, got {len(conds)}")
    if len(scales) != len(conds) - 1:
        raise ValueError(f"got {len(scales)} guidance scales for {len(conds) - 1} conditions; expected one each")
    if all(s == 1.0 for s in scales):
        # Every scale 1: the sum telescopes to the full condition's branch alone (eps_0 + Σ (eps_k - eps_{k-1}) =
        # eps_K), so one forward replaces len(conds): unguided sampling costs a third of guided for the decoder.
        full = conds[-1]

        def single_branch(x: Tensor, t: Tensor) -> Denoised:
            _check_batch(conds[0], x)
            return denoiser(x, t, full)

        return single_branch
    conds, scales = merge_equal_scales(conds, scales)
    merged = cat_conditions(conds)
    n = len(conds)

    def guided_denoiser(x: Tensor, t: Tensor) -> Denoised:
        _check_batch(conds[0], x)
        out = denoiser(torch.cat([x] * n), torch.cat([t] * n), merged)
        x0s, epss = out.x0.chunk(n), out.eps.chunk(n)
        x0, eps = x0s[0], epss[0]
        for k, s in enumerate(scales, start=1):
            x0 = x0 + s * (x0s[k] - x0s[k - 1])
            eps = eps + s * (epss[k] - epss[k - 1])
        var_frac = None if out.var_frac is None else out.var_frac.chunk(n)[-1]
        return Denoised(x0, eps, var_frac)

    return guided_denoiser


def merge_equal_scales(conds: Sequence[Any], scales: Sequence[float]) -> tuple[list[Any], list[float]]:
    """Drop the branches that equal neighbouring scales cancel: s (D(c_k) - D(c_{k-1})) + s (D(c_{k+1}) - D(c_k))
    = s (D(c_{k+1}) - D(c_{k-1})). One scale over z_i and the caption (the paper's and Karlo's decoder guidance)
    then runs two branches, not three; the result is the same up to float rounding."""
    kept, kept_scales = [conds[0]], []
    for cond, s in zip(conds[1:], scales, strict=True):
        if kept_scales and kept_scales[-1] == s:
            kept[-1] = cond
        else:
            kept.append(cond)
            kept_scales.append(s)
    return kept, kept_scales


def _check_batch(cond: Any, x: Tensor) -> None:
    size = _batch_size(cond)
    if size is not None and size != x.shape[0]:
        raise ValueError(f"conditions have batch size {size} but x has {x.shape[0]}")


def conditioned(denoiser: ConditionalDenoiser, cond: Any) -> Denoiser:
    """Bind one condition without guidance (the scale-1 case at the cost of a single branch)."""

    def bound(x: Tensor, t: Tensor) -> Denoised:
        return denoiser(x, t, cond)

    return bound
