import collections
import sys
import traceback
from pathlib import Path

import pytest
import torch

# The tiny real unCLIP stack (tests/pipeline/tiny_stack.py) serves the pipeline, CLI and evaluation tests.
sys.path.insert(0, str(Path(__file__).parent / "pipeline"))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test process: CI and these machines have 2 cores, and pytest runs 2 workers (-n 2);
    tiny models contending for threads run several times slower than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Caches the code writes by default (FID features, PCA fits) go to a folder of this run, not the home folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNCLIP_CACHE", str(tmp_path_factory.mktemp("unclip-cache")))
        yield


@pytest.fixture
def device_reads(monkeypatch):
    """``start(host_files, host_functions)`` begins counting, per site in unclip's code, what makes the host wait for
    an accelerator: a read of a tensor's value (``float(t)``, ``bool(t)``, ``t.item()``, ``t.tolist()``, ``t.cpu()``
    …), ``torch.tensor(data, device=...)`` (a blocking copy) and a boolean index (it waits for the count). Counted on
    the CPU, where these are free; frames in ``host_files`` or named in ``host_functions`` handle tensors that live on
    the host by design and are not counted. Returns the counter (site → count), which the caller may clear."""
    conversions = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__", "cpu", "numpy")

    def start(host_files: tuple[str, ...] = (), host_functions: tuple[str, ...] = ()) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()

        def record(kind: str) -> None:
            stack = traceback.extract_stack()[:-2]  # less this function and the wrapper that called it
            ours = [f for f in stack if "/unclip/" in f.filename]
            host = any(h in f.filename for f in stack for h in host_files) or any(
                f.name in host_functions for f in stack
            )
            if ours and not host:
                counts[f"{ours[-1].filename.split('/unclip/')[-1]}:{ours[-1].lineno} {kind}"] += 1

        def wrap(name: str) -> None:
            original = getattr(torch.Tensor, name)

            def counted(self, *args, **kwargs):
                record(name)
                return original(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

        for name in conversions:
            wrap(name)
        real_tensor, real_getitem = torch.tensor, torch.Tensor.__getitem__

        def tensor(*args, **kwargs):
            if kwargs.get("device") is not None:
                record("torch.tensor(device=)")
            return real_tensor(*args, **kwargs)

        def getitem(self, index):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                record("boolean index")
            return real_getitem(self, index)

        monkeypatch.setattr(torch, "tensor", tensor)
        monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
        return counts

    return start
