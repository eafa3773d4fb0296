"""Inpainting with any trained denoiser: RePaint (Lugmayr et al., 2022), shape-agnostic like the samplers.

The known part of the sample is not generated: at every noise level it is replaced by the known data noised to
that level, so the final step returns it exactly. The unknown part follows the reverse process, which sees the
known part only through the denoiser. Replacement alone (``resample=1``) leaves the two parts inconsistent: the
unknown part was drawn before the newest noised copy of the known part existed. RePaint's fix is to step back up
the chain by forward noising (``jump`` steps) and come down again, ``resample`` times per block of steps, so
that the unknown part is re-drawn given a known part it has already been denoised with. On a Gaussian, where the
exact conditional is known, this takes the unknown part's error to the conditional mean from 0.16 to 0.02
(``tests/diffusion/test_inpainting.py``).

No network is retrained: the unCLIP decoder and upsamplers inpaint as they are (``unclip.pipeline.inpainting``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from unclip.diffusion._util import Generators, check_sample, randn_like
from unclip.diffusion.parameterization import Denoiser
from unclip.diffusion.samplers import Callback, _denoise, _report, _step_listener, ddim_update, stage_name
from unclip.diffusion.schedules import TimestepGrid


def repaint_path(steps: int, resample: int = 1, jump: int = 1) -> list[int]:
    """The states RePaint visits on a grid of ``steps`` timesteps: state k is the sample at the grid's k-th
    timestep, state ``steps`` the clean sample. Consecutive states differ by one: +1 is a denoising step, -1 a
    forward-noising step.

    The path goes down the grid; at every ``jump``-th state counted from the clean end (the clean state itself
    excluded, as in the paper's schedule), it climbs ``jump`` states back up and comes down again, ``resample``
    - 1 times. So each denoising step is taken about ``resample`` times, and ``resample=1`` is the plain path.
    """
    for name, v in (("steps", steps), ("resample", resample), ("jump", jump)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    # Resample points: states steps - 1 - m * jump that leave room to climb jump states (as RePaint's
    # get_schedule_jump, whose times t = m * jump count down from the last noisy state).
    pending = {steps - 1 - m * jump: resample - 1 for m in range(steps) if steps - 1 - m * jump - jump >= 0}
    path, k = [0], 0
    while k < steps:
        k += 1
        path.append(k)
        while pending.get(k, 0) > 0:
            pending[k] -= 1
            path.extend(range(k - 1, k - jump - 1, -1))
            path.extend(range(k - jump + 1, k + 1))
    return path


def sample_repaint(
    denoiser: Denoiser,
    x: Tensor,
    grid: TimestepGrid,
    *,
    known: Tensor,
    keep: Tensor | None = None,
    project: Callable[[Tensor], Tensor] | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    eta: float = 1.0,
    resample: int = 1,
    jump: int = 1,
    desc: str = "RePaint",
) -> Tensor:
    """Sample with the part of ``known`` where ``keep`` is 1 held fixed, from noise ``x`` at ``grid.t[0]``.

    ``known`` has ``x``'s shape (its values where ``keep`` is 0 are ignored); ``keep`` broadcasts against ``x``,
    1 for known and 0 for generated entries (values between blend the two). Denoising steps are DDIM's with
    ``eta`` (1: the DDPM posterior, as RePaint); ``resample`` and ``jump`` shape the path (:func:`repaint_path`).
    The callback sees every denoising step. Returns the sample, equal to ``known`` where ``keep`` is 1.

    ``project`` in place of ``keep``: a linear projection P (P(P(v)) = P(v)) whose part of the sample is held to
    P(known) instead of a masked part, each merge replacing P(x) by P(noised known); a mask is the projection
    v -> keep * v. ILVR's low-pass filter is another (:func:`unclip.diffusion.ilvr.sample_ilvr`).
    """
    check_sample(x)
    if known.shape != x.shape:
        raise ValueError(f"known has shape {tuple(known.shape)} but the sample has {tuple(x.shape)}")
    if (keep is None) == (project is None):
        raise ValueError("give exactly one of keep (a mask) and project (a projection)")
    if keep is not None:
        try:
            keep = torch.broadcast_to(keep, x.shape).to(x.dtype)
        except RuntimeError:
            raise ValueError(f"keep of shape {tuple(keep.shape)} does not broadcast to {tuple(x.shape)}") from None
        if bool(((keep < 0) | (keep > 1)).any()):
            raise ValueError("keep must lie in [0, 1] (1: known, 0: generated)")
    if not 0.0 <= eta < math.inf:  # inf passed ">= 0" and drew black images
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    if not isinstance(grid, TimestepGrid) or len(grid) == 0:
        raise ValueError("grid must be a non-empty TimestepGrid (see NoiseSchedule.grid)")
    n = len(grid)
    path = repaint_path(n, resample, jump)
    known = known.to(x.device, x.dtype)
    # alpha_bar of every state; the clean state n has 1.
    ab = [float(a) for a in grid.alpha_bar] + [1.0]
    listener = _step_listener.get()
    name = stage_name(desc)
    downs, done = (len(path) - 1 + n) // 2, 0  # denoising steps minus climbing steps is n

    def merge(x: Tensor, k: int) -> Tensor:
        """The known part noised to state k's level (fresh noise: q(x_k | x_0)), the rest from x."""
        if ab[k] < 1.0:
            noised = math.sqrt(ab[k]) * known + math.sqrt(1.0 - ab[k]) * randn_like(known, generator)
        else:
            noised = known
        if project is not None:
            return x + project(noised - x)
        return keep * noised + (1 - keep) * x  # exact where keep is 1: the known part comes back bit for bit

    x = merge(x, 0)
    moves = tqdm(itertools.pairwise(path), total=len(path) - 1, desc=desc, disable=not progress, leave=False)
    for k, k_next in moves:
        if k_next < k:  # forward noising from state k up to state k - 1: q(x_{k-1} | x_k)
            ratio = ab[k_next] / ab[k]
            x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * randn_like(x, generator)
            continue
        t = torch.full((x.shape[0],), int(grid.t[k]), dtype=torch.int64, device=x.device)
        d = _denoise(denoiser, x, t)
        _report(callback, k, t, x, d)
        x = merge(ddim_update(d, ab[k], ab[k_next], eta, generator), k_next)
        done += 1
        if listener is not None:
            listener(name, done, downs)
    return x
