import sys
from pathlib import Path

import pytest
import torch

# Lets the prior tests import their shared data (tests/prior/prior_data.py) as a plain module.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models run fastest on one thread, and the test machines' 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
