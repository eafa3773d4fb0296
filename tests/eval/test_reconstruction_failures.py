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
