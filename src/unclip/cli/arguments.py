"""Argument types shared by the command modules (argparse only: the CLI parser must not import torch)."""

from __future__ import annotations

import argparse

# Seeds are drawn as seed, seed + 1, ... for the images of a run; torch's generators take 0 to 2**64 - 1, so a bound
# of 2**63 - 1 leaves room for any run's offsets and names the same range numpy's and the loader's seeds use.
SEED_MAX = 2**63 - 1


def seed(text: str) -> int:
    """``--seed``: an integer from 0 to 2**63 - 1 (a clear message instead of an overflow deep in torch)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} is out of range: a seed is an integer from 0 to 2**63 - 1")
    return value
