"""``unclip report``: the numbers of the input JSON files come back out of report.md and report.html, the plots
hold the sweep's points, the output folder is written all or nothing, and bad input is one line with exit 2."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from unclip.cli.main import main
from unclip.eval.report import plots, read_runs

FID_JSON = {"metric": "fid", "dir_a": "real", "dir_b": "fake", "fid": 41.2345678, "n_a": 512, "n_b": 500,
            "skipped_a": [], "images_per_second": None, "warnings": ["only 512 images"]}  # fmt: skip
CLIP_JSON = {"metric": "clip_score", "dir": "fake", "clip_score": 27.125, "n": 500, "per_prompt": {"a": {"n": 1}}}
GUIDANCE = [  # deliberately out of order: plots sort by guidance
    {"guidance": 3.0, "fid": 30.5, "clip_score": 26.0, "diversity": 0.31, "sampler": "ddim", "steps": 50},
    {"guidance": 1.0, "fid": 25.25, "clip_score": 24.5, "diversity": 0.42, "sampler": "ddim", "steps": 50},
    {"guidance": 8.0, "fid": 44.0, "clip_score": 27.75, "diversity": 0.2, "sampler": "ddim", "steps": 50},
]
STEPS = [
    {"sampler": "ddim", "steps": 25, "seconds": 6.5, "fid": 33.0},
    {"sampler": "ddim", "steps": 5, "seconds": 1.25, "fid": 80.0},
    {"sampler": "ddpm", "steps": 250, "seconds": 60.0, "fid": 31.0, "note": "paper setting"},
]
GLIDE = [{"guidance": g, "fid": 20.0 + 3 * g, "clip_score": 22.0 + g / 2, "diversity": 0.5 / g} for g in (1.0, 2.0)]


def write_runs(tmp_path):
    a, b = tmp_path / "unclip_run", tmp_path / "glide_run"
    a.mkdir()
    b.mkdir()
    (a / "fid.json").write_text(json.dumps(FID_JSON))
    (a / "clip.json").write_text(json.dumps(CLIP_JSON))
    (a / "sweep.json").write_text(json.dumps(GUIDANCE + STEPS))
    (b / "sweep.json").write_text(json.dumps({"rows": GLIDE, "about": "caption-only decoder"}))
    return a, b


def md_tables(text):
    """{heading: [row dicts]} for every pipe table, keyed by the nearest heading above it."""
    tables, heading, lines = {}, None, text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            cols = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(cols, [c.strip() for c in lines[i].strip("|").split("|")], strict=True)))
                i += 1
            tables[heading] = rows
            continue
        i += 1
    return tables


class HTMLTables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.headings = [], [], []
        self._cell = self._row = None
        self._heading = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag in ("h2", "h3"):
            self._heading = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._heading is not None:
            self._heading += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            self.tables[-1].append(self._row)
        elif tag in ("h2", "h3"):
            self.headings.append(self._heading)
            self._heading = None


def number(cell):
    return None if cell == "—" else float(cell)


def test_report_writes_the_input_numbers_and_the_plots(tmp_path, capsys):
    a, b = write_runs(tmp_path)
    out = tmp_path / "report"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert "3 plot(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "diversity_vs_guidance.png", "fid_vs_clip_score.png", "quality_vs_time.png", "report.html", "report.md",
    ]  # fmt: skip

    md = md_tables((out / "report.md").read_text())
    (fid_row,) = md["fid"]
    assert fid_row["run"] == "unclip_run" and fid_row["file"] == "fid.json"
    assert number(fid_row["fid"]) == pytest.approx(FID_JSON["fid"], rel=1e-6)
    assert (fid_row["n_a"], fid_row["n_b"], fid_row["images_per_second"]) == ("512", "500", "—")
    assert "warnings" not in fid_row and "dir_a" not in fid_row  # only top-level numbers are columns
    assert number(md["clip_score"][0]["clip_score"]) == CLIP_JSON["clip_score"]
    sweep = md["Sweeps"]
    inputs = [("unclip_run", r) for r in GUIDANCE + STEPS] + [("glide_run", r) for r in GLIDE]
    assert len(sweep) == len(inputs)
    for row, (run, expected) in zip(sweep, inputs, strict=True):
        assert row["run"] == run
        for key in ("guidance", "fid", "clip_score", "diversity", "steps", "seconds"):
            assert number(row[key]) == (pytest.approx(expected[key]) if key in expected else None)
        assert row["sampler"] == expected.get("sampler", "—") and row["note"] == expected.get("note", "—")

    page = HTMLTables()
    page.feed((out / "report.html").read_text())
    assert sorted(page.images) == ["diversity_vs_guidance.png", "fid_vs_clip_score.png", "quality_vs_time.png"]
    html_sweep = page.tables[-1]
    assert html_sweep[0] == list(sweep[0])  # the same columns as the Markdown table, in the same order
    assert [dict(zip(html_sweep[0], r, strict=True)) for r in html_sweep[1:]] == sweep  # and the same cells
    assert "fid" in page.headings and "clip_score" in page.headings

    for name in page.images:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 400
            assert np.asarray(im.convert("L")).std() > 10  # something is drawn


def test_plot_series_hold_the_sweep_points(tmp_path):
    runs = read_runs(list(write_runs(tmp_path)))
    made, notes = plots(runs)
    assert notes == []
    by_file = {p.file: p for p in made}
    (ours, glide) = by_file["fid_vs_clip_score.png"].series
    assert ours.label == "unclip_run, ddim, steps=50" and glide.label == "glide_run"
    assert ours.x == [24.5, 26.0, 27.75] and ours.y == [25.25, 30.5, 44.0]  # sorted by guidance
    assert ours.notes == ["1", "3", "8"]
    assert glide.y == [23.0, 26.0]
    div = by_file["diversity_vs_guidance.png"].series
    assert div[0].x == [1.0, 3.0, 8.0] and div[0].y == [0.42, 0.31, 0.2]
    time_plot = by_file["quality_vs_time.png"]
    assert [s.label for s in time_plot.series] == ["unclip_run, ddim", "unclip_run, ddpm"]
    assert time_plot.series[0].x == [1.25, 6.5] and time_plot.series[0].notes == ["5", "25"]
    assert time_plot.log_x  # 1.25 s to 60 s


def test_time_plot_uses_cpu_seconds_when_every_stepped_row_has_them(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"sampler": "ddim", "steps": s, "seconds": 9.0 * s, "cpu_seconds": float(s), "fid": 100.0 / s} for s in (5, 50)
    ]
    (run / "sweep.json").write_text(json.dumps({"rows": rows}))
    (plot,) = [p for p in plots(read_runs([run]))[0] if p.file == "quality_vs_time.png"]
    assert plot.series[0].x == [5.0, 50.0] and plot.xlabel.startswith("CPU time")
    rows[1].pop("cpu_seconds")  # one row without CPU time: wall time for all, never a mixed axis
    (run / "sweep.json").write_text(json.dumps({"rows": rows}))
    (plot,) = [p for p in plots(read_runs([run]))[0] if p.file == "quality_vs_time.png"]
    assert plot.series[0].x == [45.0, 450.0] and plot.xlabel == "wall time (s)"


def test_missing_fields_leave_a_plot_out_with_a_note(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "sweep.json").write_text(json.dumps([{"guidance": 1.0, "diversity": 0.5}, {"guidance": 2.0}]))
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "not drawn: FID against CLIP score" in printed and "1 plot(s)" in printed
    assert sorted(p.name for p in out.glob("*.png")) == ["diversity_vs_guidance.png"]
    assert "Not drawn: quality against wall time" in (out / "report.md").read_text()
    assert "No metric files." in (out / "report.md").read_text()


def test_a_metric_command_output_feeds_the_report(tmp_path, capsys, monkeypatch):
    from eval_helpers import CountingExtractor, shapes_images, write_folder

    monkeypatch.setattr("unclip.eval.inception.InceptionFeatures", lambda device="cpu": CountingExtractor())
    real = write_folder(tmp_path / "real", shapes_images(5, resolution=32))
    capsys.readouterr()
    assert main(["eval", "precision-recall", str(real), str(real), "--no-cache", "--json"]) == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "pr.json").write_text(capsys.readouterr().out)
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    (row,) = md_tables((tmp_path / "out" / "report.md").read_text())["precision_recall"]
    assert (row["precision"], row["recall"], row["k"], row["n_real"]) == ("1", "1", "3", "5")


def test_output_folder_is_replaced_whole_but_never_a_foreign_one(tmp_path, capsys):
    a, b = write_runs(tmp_path)
    out = tmp_path / "out"
    assert main(["report", str(a), "--out", str(out)]) == 0
    assert main(["report", str(b), "--out", str(out)]) == 0  # an earlier report is replaced
    assert "unclip_run" not in (out / "report.md").read_text()
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left behind
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["report", str(a), "--out", str(out)]) == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").exists()
    assert main(["report", str(a), "--out", str(a)]) == 2  # would delete the run's own files
    assert main(["report", str(a), "--out", str(tmp_path)]) == 2  # would delete the folder holding the runs
    assert (a / "fid.json").exists()


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({}, "holds no *.json metric files"),
        ({"fid.json": "{oops"}, "fid.json: not valid JSON"),
        ({"fid.json": "[1, 2]"}, "fid.json: a metric file must hold one JSON object"),
        ({"sweep.json": '{"guidance": 1}'}, "expected a list of rows"),
        ({"sweep.json": '[{"guidance": 1, "fid": "low"}]'}, "row 0: 'fid' must be a finite number, got 'low'"),
        ({"sweep.json": '[{"guidance": NaN}]'}, "'guidance' must be a finite number"),
        ({"sweep.json": '[{"sampler": 3}]'}, "'sampler' must be a string"),
        ({"sweep.json": "[5]"}, "a sweep row must be a JSON object"),
    ],
)
def test_bad_run_folders_are_one_line_errors(tmp_path, capsys, files, needle):
    run = tmp_path / "run"
    run.mkdir()
    for name, text in files.items():
        (run / name).write_text(text)
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unclip report: error:") and "\n" not in err and needle in err, err
    assert not (tmp_path / "out").exists()


def test_missing_run_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_kid_is_plotted_where_every_row_has_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"guidance": g, "steps": 50, "cpu_seconds": 1.0 + g, "fid": 200.0 + g, "kid": 0.1 / g, "clip_score": 20 + g}
            for g in (1.0, 3.0)]  # fmt: skip
    (run / "sweep.json").write_text(json.dumps({"rows": rows}))
    by_file = {p.file: p for p in plots(read_runs([run]))[0]}
    assert by_file["kid_vs_clip_score.png"].series[0].y == [0.1, 0.1 / 3]
    assert by_file["quality_vs_time.png"].ylabel.startswith("KID")
    rows[0].pop("kid")  # KID on some rows only: the time plot falls back to FID for all
    (run / "sweep.json").write_text(json.dumps({"rows": rows}))
    by_file = {p.file: p for p in plots(read_runs([run]))[0]}
    assert by_file["quality_vs_time.png"].ylabel.startswith("FID")
