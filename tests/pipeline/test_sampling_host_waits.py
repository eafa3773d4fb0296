"""A sampler step makes the host wait for nothing (see tests/train/test_train_host_waits.py for why it matters).

Generating with 4 and with 8 steps per stage (prior, decoder, upsampler) must count the same waits (the
``device_reads`` fixture of tests/conftest.py): the extra steps add none. The sampler's own timestep grid is a host
tensor by design (``_steps`` reads its entries), as are the tokenizer's ids.
"""

from __future__ import annotations

from tiny_stack import tiny_pipeline


def test_more_sampler_steps_read_nothing_more_from_the_device(device_reads):
    counts = device_reads(("/unclip/clip/tokenizer.py",), ("_steps",))  # the TimestepGrid lives on the host
    pipe = tiny_pipeline()
    runs = []
    for steps in (4, 8):
        counts.clear()
        pipe("a red circle", num_images=2, seed=0, prior_steps=steps, decoder_steps=steps, upsampler_steps=steps)
        runs.append(dict(counts))
    extra = {k: runs[1].get(k, 0) - runs[0].get(k, 0) for k in set(runs[0]) | set(runs[1])}
    assert not {k: n for k, n in extra.items() if n > 0}, extra
