"""scripts/experiments/reconstruction_failures.py: how a reconstruction's objects differ from its scene's."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "experiments" / "reconstruction_failures.py"
spec = importlib.util.spec_from_file_location("reconstruction_failures", SCRIPT)
failures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(failures)

RED_CIRCLE, BLUE_SQUARE = ("circle", "red"), ("square", "blue")


@pytest.mark.parametrize(
    ("found", "kind"),
    [
        ([BLUE_SQUARE, RED_CIRCLE], "exact"),  # order does not matter
        ([("circle", "blue"), ("square", "red")], "binding wrong"),  # both colours and shapes right, swapped
        ([("star", "red"), BLUE_SQUARE], "shape wrong"),
        ([RED_CIRCLE, ("square", "green")], "colour wrong"),
        ([("star", "green"), BLUE_SQUARE], "shape wrong and colour wrong"),
        ([RED_CIRCLE], "missing object"),
        ([RED_CIRCLE, BLUE_SQUARE, RED_CIRCLE], "extra object"),
        ([RED_CIRCLE, RED_CIRCLE], "shape wrong and colour wrong"),  # a duplicate in place of the other object
    ],
)
def test_failure_kinds(found, kind):
    assert failures.failure_kind([RED_CIRCLE, BLUE_SQUARE], found) == kind


def test_tally_counts_kinds_per_object_count():
    rows = [(2, "exact"), (1, "shape wrong"), (2, "exact"), (2, "extra object")]
    assert failures.tally(rows) == {"1": {"shape wrong": 1}, "2": {"exact": 2, "extra object": 1}}


def _load(name):
    path = SCRIPT.with_name(f"{name}.py")
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_probe_targets_are_count_shape_presence_and_colour_presence():
    probe = _load("z_i_content_probe")
    count, shapes, colours = probe.targets([RED_CIRCLE, BLUE_SQUARE, ("circle", "blue")])
    assert count == 2  # three objects: class 2 of the 4-way count
    assert [s for s, on in zip(probe.SHAPES, shapes, strict=True) if on] == ["circle", "square"]
    assert sorted(c for c, on in zip(probe.COLOUR_NAMES, colours, strict=True) if on) == ["blue", "red"]
