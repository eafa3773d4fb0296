"""Paired comparison of two evaluations on the same scenes and seeds: McNemar's exact test, per category.

Two decoders judged on the same held-out scenes, each decoded from the same noise, agree on most scenes; only the
scenes where they disagree say which is better. McNemar's exact test asks whether the ``b`` scenes that only A
got right and the ``c`` that only B got right could be a fair coin's split of ``b + c``: p is the two-sided
binomial tail, 2·P(X ≤ min(b, c)) for X ~ Bin(b + c, 1/2), capped at 1. Far more sensitive than comparing the
two accuracies as if they were independent samples.

    unclip eval paired A.json B.json   # two `unclip eval decoder|compositional|manipulations --json` results
    python -m unclip.eval.paired A.json B.json   # the same
"""

from __future__ import annotations

import argparse
import json
from math import comb
from pathlib import Path
from typing import Any


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact p-value for ``only_a`` against ``only_b`` discordant pairs (1.0 when there are none)."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_verdicts(a: dict[str, str], b: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per key of two ``verdicts`` tables (``unclip.eval.generation.verdict_strings``): the scenes both show,
    the accuracies of A and B on them, the discordant counts and McNemar's p."""
    out = {}
    for key in sorted(set(a) & set(b)):
        if len(a[key]) != len(b[key]):
            raise ValueError(f"{key}: {len(a[key])} scenes against {len(b[key])}: compare runs on the same scenes")
        pairs = [(x, y) for x, y in zip(a[key], b[key], strict=True) if x != "-" and y != "-"]
        if any((x == "-") != (y == "-") for x, y in zip(a[key], b[key], strict=True)):
            raise ValueError(f"{key}: the two runs judged different scenes (the '-' marks differ)")
        only_a = sum(x == "1" and y == "0" for x, y in pairs)
        only_b = sum(x == "0" and y == "1" for x, y in pairs)
        n = len(pairs)
        out[key] = {
            "n": n,
            "a": sum(x == "1" for x, _ in pairs) / n if n else 0.0,
            "b": sum(y == "1" for _, y in pairs) / n if n else 0.0,
            "only_a": only_a,
            "only_b": only_b,
            "p": mcnemar_exact(only_a, only_b),
        }
    return out


def verdict_sections(result: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The per-scene verdict tables of one evaluation's JSON: ``{"": table}`` for a decoder or compositional
    evaluation (``verdicts`` at the top, or under ``details`` as ``unclip eval all`` nests it), one per section
    for those with several (``unclip eval manipulations``: ``variations`` and ``text_diffs``)."""
    top = result.get("verdicts") or result.get("details", {}).get("verdicts")
    if isinstance(top, dict):
        return {"": top}
    return {k: v["verdicts"] for k, v in result.items() if isinstance(v, dict) and isinstance(v.get("verdicts"), dict)}


def _sections(path: Path) -> dict[str, dict[str, str]]:
    sections = verdict_sections(json.loads(path.read_text(encoding="utf-8")))
    if not sections:
        raise ValueError(f"{path} has no per-scene verdicts (written by `unclip eval decoder|compositional|"
                         "manipulations --json`)")  # fmt: skip
    return sections


def paired_tables(a: Path, b: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`compare_verdicts` for every evaluation two JSON results share (``""`` when each holds one)."""
    sa, sb = _sections(Path(a)), _sections(Path(b))
    common = [k for k in sa if k in sb]
    if not common:
        raise ValueError(f"{a} and {b} share no evaluation: {', '.join(sa)} against {', '.join(sb)}")
    return {section: compare_verdicts(sa[section], sb[section]) for section in common}


def format_tables(tables: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The tables of :func:`paired_tables` as text, one row per category."""
    lines = []
    for section, table in tables.items():
        if section:
            lines.append(f"== {section}")
        lines.append(f"{'category':<20} {'scenes':>6} {'A':>6} {'B':>6} {'only A':>7} {'only B':>7} {'p':>7}")
        for key, r in table.items():
            lines.append(f"{key:<20} {r['n']:>6} {r['a']:>6.3f} {r['b']:>6.3f} {r['only_a']:>7} {r['only_b']:>7} "
                         f"{r['p']:>7.3f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unclip.eval.paired", description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    try:  # a missing file, a result without verdicts or runs on other scenes: a message, not a traceback
        tables = paired_tables(args.a, args.b)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    print(format_tables(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
