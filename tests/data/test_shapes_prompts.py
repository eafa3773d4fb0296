"""The prompt suite is fixed, versioned and complete."""

import collections

from unclip.data.shapes import CATEGORIES, PROMPT_SUITE, PROMPT_SUITE_VERSION, Requirement
from unclip.data.shapes.prompts import build_prompt_suite, suite_hash

# Changing the suite needs a new PROMPT_SUITE_VERSION, and then a new hash here.
PINNED = {"shapes-prompts-v1": "128a3d4a943a87cccbf87607fe8eee7f7bfe186a031e757d7fbb5c6b5b37d577"}


def test_suite_is_pinned_to_its_version():
    assert suite_hash(PROMPT_SUITE) == PINNED[PROMPT_SUITE_VERSION]
    assert build_prompt_suite() == PROMPT_SUITE


def test_at_least_100_distinct_prompts_per_category():
    counts = collections.Counter(p.category for p in PROMPT_SUITE)
    assert set(counts) == set(CATEGORIES) and min(counts.values()) >= 100
    assert len({p.text for p in PROMPT_SUITE}) == len(PROMPT_SUITE)
    assert len({p.key for p in PROMPT_SUITE}) == len(PROMPT_SUITE)


def test_requirements_match_categories_and_round_trip():
    for p in PROMPT_SUITE:
        r = p.requirement
        assert r.category == p.category and Requirement.from_json(r.to_json()) == r
        if p.category == "counting":
            assert 2 <= r.objects[0].count <= 4
        if p.category == "position":
            assert r.relation is not None
        if p.category == "colour_attribution":
            assert r.objects[0].colour != r.objects[1].colour and r.objects[0].shape != r.objects[1].shape
