"""Splits never share a random stream; held-out compositions never reach train."""

import numpy as np
import pytest

from unclip.data.shapes import HELDOUT_PAIRS, ShapesWorld, heldout_compositions
from unclip.data.shapes.splits import SPLITS, sample_rng


def test_streams_differ_between_splits_for_every_seed_and_index():
    for seed in (0, 1):
        for i in (0, 1, 99):
            draws = {split: sample_rng(seed, split, i).integers(2**62) for split in SPLITS}
            assert len(set(draws.values())) == len(SPLITS)


def test_no_image_shared_between_train_val_and_test():
    hashes = {}
    for split in ("train", "val", "test"):
        w = ShapesWorld(split, seed=0, resolution=32)
        hashes[split] = {w[i].image.tobytes() for i in range(150)}
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_train_never_contains_heldout_compositions_and_heldout_always_does():
    train, heldout, test = ShapesWorld("train", seed=2), ShapesWorld("heldout", seed=2), ShapesWorld("test", seed=2)
    assert all(not heldout_compositions(train.scene(i)) for i in range(400))
    assert all(heldout_compositions(heldout.scene(i)) for i in range(100))
    # test is unconstrained, so it does show held-out pairs at their natural rate
    assert sum(bool(heldout_compositions(test.scene(i))) for i in range(200)) > 20
    pairs = {(o.colour, o.shape) for i in range(400) for o in train.scene(i).objects}
    assert not pairs & HELDOUT_PAIRS
    assert len(pairs) > 40  # the rest of the colour-shape grid is covered


def test_bad_split_and_seed_are_rejected():
    with pytest.raises(ValueError, match="split"):
        ShapesWorld("training")
    with pytest.raises(ValueError, match="seed"):
        ShapesWorld("train", seed=-1)
    assert isinstance(ShapesWorld("train")[np.int64(3)].caption, str)
