"""Paired comparison of two judged runs (unclip.eval.paired): McNemar's exact test and the verdict tables."""

import json
from math import comb

import pytest

from unclip.eval.generation import verdict_strings
from unclip.eval.paired import compare_verdicts, main, mcnemar_exact


def _two_sided_by_enumeration(b, c):
    """The exact test's definition: the probability, under Bin(b + c, 1/2), of a split no more likely than b : c."""
    n = b + c
    pmf = [comb(n, k) / 2**n for k in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[b] * (1 + 1e-12)))


@pytest.mark.parametrize(("b", "c"), [(0, 5), (5, 0), (3, 3), (7, 15), (17, 31), (81, 102), (1, 0), (0, 12)])
def test_mcnemar_matches_the_enumerated_binomial_and_is_symmetric(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(_two_sided_by_enumeration(b, c), rel=1e-12)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_mcnemar_edge_cases():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact(-1, 3)


def test_verdict_strings_mark_kept_lost_and_not_shown():
    judged = [{"colours": True, "counting": False}, {"colours": False}, {"colours": True}]
    assert verdict_strings(judged) == {"colours": "101", "counting": "0--", "faithful": "001"}


def test_compare_counts_only_the_scenes_where_the_runs_disagree(tmp_path, capsys):
    a = {"colours": "1101-0", "faithful": "110100"}
    b = {"colours": "0111-1", "faithful": "110100"}
    table = compare_verdicts(a, b)
    assert table["colours"] == {"n": 5, "a": 0.6, "b": 0.8, "only_a": 1, "only_b": 2, "p": 1.0}
    assert table["faithful"]["only_a"] == table["faithful"]["only_b"] == 0 and table["faithful"]["p"] == 1.0
    with pytest.raises(ValueError, match="same scenes"):
        compare_verdicts({"colours": "10"}, {"colours": "101"})
    with pytest.raises(ValueError, match="different scenes"):
        compare_verdicts({"colours": "1-1"}, {"colours": "110"})
    (tmp_path / "a.json").write_text(json.dumps({"verdicts": a}))
    (tmp_path / "b.json").write_text(json.dumps({"n": 6}))
    with pytest.raises(SystemExit):  # a message on stderr, no traceback
        main([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert "no per-scene verdicts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")])
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "b.json").write_text(json.dumps({"verdicts": b}))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("colours"))
    assert row.split() == ["colours", "5", "0.600", "0.800", "1", "2", "1.000"]


def test_evaluations_with_sections_are_compared_section_by_section(tmp_path, capsys):
    # `unclip eval manipulations --json` holds one verdict table per manipulation
    a = {"variations": {"rate": 0.5, "verdicts": {"variation": "1100"}}, "text_diffs": {"verdicts": {"edit": "10"}}}
    b = {"variations": {"rate": 0.75, "verdicts": {"variation": "1110"}}, "text_diffs": {"verdicts": {"edit": "01"}}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "== variations" and lines[2].split() == ["variation", "4", "0.500", "0.750", "0", "1", "1.000"]
    assert lines[3] == "== text_diffs" and lines[5].split() == ["edit", "2", "0.500", "0.500", "1", "1", "1.000"]
    (tmp_path / "c.json").write_text(json.dumps({"verdicts": {"faithful": "1100"}}))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a.json"), str(tmp_path / "c.json")])
    assert "share no evaluation" in capsys.readouterr().err


def test_unclip_eval_paired_prints_the_tables_and_refuses_bad_files(tmp_path, capsys):
    from unclip.cli.main import main as cli

    a = {"verdicts": {"faithful": "010011", "colours": "1-0111"}}
    b = {"verdicts": {"faithful": "011111", "colours": "1-1111"}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert cli(["eval", "paired", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert tables[""]["faithful"] == {"n": 6, "a": 0.5, "b": 5 / 6, "only_a": 0, "only_b": 2, "p": 0.5}
    assert tables[""]["colours"]["n"] == 5 and tables[""]["colours"]["only_b"] == 1
    assert cli(["eval", "paired", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["colours", "5"]
    (tmp_path / "c.json").write_text("{not json")
    assert cli(["eval", "paired", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) != 0
    assert "error" in capsys.readouterr().err
    assert cli(["eval", "paired", str(tmp_path / "a.json"), str(tmp_path / "nothing.json")]) != 0
    assert "nothing.json" in capsys.readouterr().err
