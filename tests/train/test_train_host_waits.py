"""How often a training step makes the host read a value back from the device.

On an accelerator every such read (``float(t)``, ``bool(t)``, ``t.item()``, ``t.tolist()``, ``t.cpu()``) waits for
all the work queued so far: the host stops queueing kernels and the device then idles while the host queues the next
ones. A small network's step is bounded by that queueing, so a read in the middle of a step (a logged metric turned
into a float before the backward pass) costs throughput. This test counts the reads a step makes outside logging
steps and holds each stage to its budget: one for every stage (the engine's non-finite guard, which must know before
the optimizer steps), plus the frozen CLIP's input check for the decoder. A new read fails here.

Counted on the CPU by the ``device_reads`` fixture (tests/conftest.py); reads of tensors that live on the host by
design are not counted: the data loader's, per-sample seeds and generator draws (``Batch.generators``, upsampler
crop offsets), the tokenizer's ids, and the optimizer's step counters.
"""

from __future__ import annotations

import pytest

from unclip.cli.main import main

_HOST_SIDE_FILES = ("/unclip/data/", "/unclip/train/stage.py", "/unclip/clip/tokenizer.py", "/torch/optim/")
_HOST_SIDE_FUNCTIONS = ("random_crops", "eot_positions")  # CPU generator draws; a check that reads only CPU ids


# The binding recipe's joint settings (scripts/experiments/binding_recipe.sh), at a tiny scale.
_BINDING = tuple(
    x
    for kv in ("model.counterfactual_kinds=swap,relation", "model.pair_weight=1", "model.separation_weight=1",
               "model.paraphrase_weight=1", "model.negatives_per_caption=2", "model.relation_samples=2")
    for x in ("--set", kv)
)  # fmt: skip


def _reads(tmp_path, counts, steps, stage, *extra):
    counts.clear()
    code = main(
        ["train", stage, "--preset", "tiny", "--data", "shapes", "--out", str(tmp_path / f"{stage}{steps}"),
         "--no-progress", "--steps", str(steps), "--set", f"train.log_every={steps}",
         "--set", "train.checkpoint_every=1000", "--set", "train.sample_count=0", *extra]
    )  # fmt: skip
    assert code == 0
    return dict(counts)


@pytest.mark.parametrize(
    ("stage", "extra", "budget"),
    [
        ("toy", (), 1),
        ("upsampler", ("--batch-size", "2"), 1),
        ("clip", ("--batch-size", "4"), 1),
        ("clip", ("--batch-size", "8", *_BINDING), 1),  # hard negatives, counterfactual pairs, relation samples
        ("decoder", ("--batch-size", "2", "--set", "model.clip=TINY_CLIP"), 2),  # + the frozen CLIP's image check
    ],
)
def test_a_training_step_reads_from_the_device_only_within_its_budget(
    tmp_path, device_reads, tiny_clip, stage, extra, budget
):
    extra = tuple(x.replace("TINY_CLIP", str(tiny_clip)) for x in extra)
    counts = device_reads(_HOST_SIDE_FILES, _HOST_SIDE_FUNCTIONS)
    # Start-up and the last (logging) step read the same in both runs; the 4 extra middle steps are the difference.
    short, long = _reads(tmp_path, counts, 2, stage, *extra), _reads(tmp_path, counts, 6, stage, *extra)
    per_step = {site: (long.get(site, 0) - short.get(site, 0)) / 4 for site in set(short) | set(long)}
    per_step = {site: n for site, n in per_step.items() if n}
    assert sum(per_step.values()) == budget, per_step
    assert any("train/engine.py" in site and "__bool__" in site for site in per_step)  # the non-finite guard
