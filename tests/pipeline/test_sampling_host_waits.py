"""A sampler step reads nothing back from the device (see tests/train/test_train_host_waits.py for why it matters).

Generating with 4 and with 8 steps per stage (prior, decoder, upsampler) must make the same number of conversions of
tensors to Python values: the extra steps add none. The sampler's own timestep grid is a host tensor by design
(``_steps`` reads its entries), as are the tokenizer's ids.
"""

from __future__ import annotations

import collections
import traceback

import torch
from tiny_stack import tiny_pipeline

_CONVERSIONS = ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy")
_HOST_SIDE_FILES = ("/unclip/clip/tokenizer.py",)
_HOST_SIDE_FUNCTIONS = ("_steps",)  # the TimestepGrid lives on the host


def test_more_sampler_steps_read_nothing_more_from_the_device(monkeypatch):
    counts: collections.Counter[str] = collections.Counter()

    def wrap(name):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, **kwargs):
            stack = traceback.extract_stack()[:-1]
            ours = [f for f in stack if "/unclip/" in f.filename]
            host = any(h in f.filename for f in stack for h in _HOST_SIDE_FILES)
            if ours and not host and not any(f.name in _HOST_SIDE_FUNCTIONS for f in stack):
                counts[f"{ours[-1].filename.split('/unclip/')[-1]}:{ours[-1].lineno} {name}"] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    for name in _CONVERSIONS:
        wrap(name)
    pipe = tiny_pipeline()
    runs = []
    for steps in (4, 8):
        counts.clear()
        pipe("a red circle", num_images=2, seed=0, prior_steps=steps, decoder_steps=steps, upsampler_steps=steps)
        runs.append(dict(counts))
    extra = {k: runs[1].get(k, 0) - runs[0].get(k, 0) for k in set(runs[0]) | set(runs[1])}
    assert not {k: n for k, n in extra.items() if n > 0}, extra
