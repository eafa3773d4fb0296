import sys
from pathlib import Path

import pytest
import torch

# The engine tests train a stage defined here (tests/train/tiny_stage.py), imported as a plain module.
sys.path.insert(0, str(Path(__file__).parent))

# Two cores shared by everything on the machine: one thread per process is several times faster than two
# contending ones, and the subprocesses of the resume and DDP tests use the same count (OMP_NUM_THREADS=1).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; its process-wide singleton state must not leak."""
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A saved, untrained tiny CLIP folder for the stages that need a frozen one (decoder)."""
    from unclip.clip import CLIP, PRESETS, make_tokenizer

    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    folder = tmp_path_factory.mktemp("clip") / "tiny"
    CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).save_pretrained(folder)
    return folder
