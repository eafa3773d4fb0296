"""Host-to-device copies: pinned and non-blocking towards CUDA, plain on the CPU; constant tables copied once.

No GPU here, so the CUDA path is checked against a recording stand-in for ``Tensor.pin_memory`` and ``Tensor.to``:
the contract is which calls are made, with which arguments, and how often.
"""

from __future__ import annotations

import pytest
import torch

from unclip import transfers
from unclip.transfers import table_on, to_device


@pytest.fixture
def fake_cuda(monkeypatch):
    """Records pin_memory and .to calls; a .to towards "cuda" returns a CPU clone instead of failing."""
    calls: list[tuple[str, object]] = []
    real_to = torch.Tensor.to

    def pin_memory(self):
        calls.append(("pin", tuple(self.shape)))
        return self

    def to(self, *args, **kwargs):
        device = args[0] if args else kwargs.get("device")
        if isinstance(device, torch.device) and device.type == "cuda":
            calls.append(("to", kwargs.get("non_blocking", False)))
            return self.clone()
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(transfers, "_TABLES", type(transfers._TABLES)())
    return calls


def test_a_copy_towards_cuda_is_pinned_and_non_blocking(fake_cuda):
    x = torch.randn(4, 3)
    y = to_device(x, "cuda")
    assert fake_cuda == [("pin", (4, 3)), ("to", True)]
    assert torch.equal(y, x)


def test_on_the_cpu_a_copy_is_the_plain_to():
    x = torch.arange(6.0)
    assert to_device(x, "cpu") is x  # nothing to copy, nothing pinned (pinning needs an accelerator)
    assert to_device(x, "cpu", torch.float64).dtype == torch.float64
    assert table_on(x, "cpu") is x


def test_a_table_is_copied_once_per_content_and_the_cache_stays_bounded(fake_cuda):
    schedule = torch.linspace(0.0, 1.0, 1000, dtype=torch.float64)
    first = table_on(schedule, "cuda")
    again = table_on(schedule.clone(), "cuda")  # an equal table rebuilt by the next step's loss
    assert again is first and fake_cuda.count(("to", True)) == 1
    other = table_on(schedule * 0.5, "cuda")
    assert other is not first and torch.equal(other, schedule * 0.5) and fake_cuda.count(("to", True)) == 2
    for k in range(transfers._MAX_TABLES + 10):
        table_on(torch.full((3,), float(k)), "cuda")
    assert len(transfers._TABLES) == transfers._MAX_TABLES


def test_per_sample_noise_reaches_the_device_in_one_copy(fake_cuda):
    from unclip.diffusion._util import randn

    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    noise = randn((3, 2, 4), gens, device="cuda")
    assert fake_cuda.count(("to", True)) == 1 and ("to", False) not in fake_cuda  # not one blocking copy per sample
    alone = randn((1, 2, 4), [torch.Generator().manual_seed(2)])
    assert torch.equal(noise[1:2], alone)  # sample i still depends on its own seed only
