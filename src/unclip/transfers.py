"""Host-to-device copies that do not make the host wait for the device.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory is synchronous: PyTorch copies, then waits for the
stream, so every such copy inside a training step stalls the host until all the kernels queued before it have run,
and the device then idles while the host queues the next ones. A small network's step is bounded by that queueing
(docs/benchmarks.md, "Host waits in a training step"). Two remedies, used on every per-step copy of the trainings:

- :func:`to_device` stages a batch-sized tensor in pinned (page-locked) memory and copies it without blocking; the
  caching host allocator keeps the pinned block alive until the copy has run.
- :func:`table_on` copies a constant lookup table (a noise schedule's alpha_bar, log-variance bounds) once per
  device and content, instead of on every step.

On the CPU both are the plain ``.to``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

_TABLES: OrderedDict[tuple[object, ...], Tensor] = OrderedDict()
_MAX_TABLES = 64  # a few schedules × a few tables × devices; bounded, since losses are rebuilt every step


def to_device(x: Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> Tensor:
    """``x.to(device, dtype)``, without a host wait when ``x`` is on the CPU and ``device`` is a CUDA device."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        # contiguous first: a strided pinned tensor is made contiguous again by the copy, in pageable memory
        return x.contiguous().pin_memory().to(device, dtype, non_blocking=True)
    return x.to(device, dtype)


def table_on(table: Tensor, device: torch.device | str) -> Tensor:
    """A small constant CPU ``table`` on ``device``, copied once per device and content and then reused.

    Keyed by the values themselves (a few kB of bytes), not the object, since callers rebuild equal tables on every
    step. The result must be treated as read-only."""
    device = torch.device(device)
    if table.device == device or table.device.type != "cpu" or device.type == "cpu":
        return table.to(device)
    raw = table.detach().contiguous().reshape(-1).view(torch.uint8)  # bytes of any dtype (numpy has no bfloat16)
    key = (str(device), table.dtype, tuple(table.shape), raw.numpy().tobytes())
    hit = _TABLES.get(key)
    if hit is None:
        hit = _TABLES[key] = to_device(table.detach(), device)
        while len(_TABLES) > _MAX_TABLES:
            _TABLES.popitem(last=False)
    else:
        _TABLES.move_to_end(key)
    return hit
