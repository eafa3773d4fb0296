import sys
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
