"""Fixtures of the eval tests."""

import pytest
from eval_helpers import CountingExtractor


@pytest.fixture
def extractor():
    return CountingExtractor()


@pytest.fixture(scope="session")
def inception():
    from unclip.eval import InceptionFeatures

    return InceptionFeatures()
