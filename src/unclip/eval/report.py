"""``unclip report``: evaluation results of several runs gathered into one page (Markdown and HTML) with plots.

The input convention (docs/eval.md, "unclip report"). Each run folder holds

- any number of ``*.json`` **metric files**, each one JSON object as printed by ``unclip eval METRIC --json``; its
  ``"metric"`` field (else the file's stem) names the table it goes into, and its top-level numbers are the
  columns (nested objects, lists and strings are left out of the tables);
- optionally ``sweep.json``: a list of row objects (or ``{"rows": [...]}``), one per evaluated setting, with any of
  ``guidance``, ``fid``, ``clip_score``, ``diversity``, ``precision``, ``recall``, ``steps``, ``seconds``
  (numbers) and ``sampler`` (a string), plus any other scalar fields, shown in the table.

The plots are the paper's §5.2 trade-offs at our scale: FID against CLIP score along a guidance sweep (the
trade-off curve of GLIDE, Nichol et al. 2021, that unCLIP revisits), diversity against guidance (unCLIP's claim:
it keeps its diversity as guidance grows), and quality against wall time along a sampler/steps sweep. A plot is
drawn from the sweep rows that have its fields and left out, with a note, when none has them.

Plots use matplotlib's Agg canvas directly (no pyplot, so no global backend state); the output folder is written
all or nothing.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unclip.atomic import atomic_directory

SWEEP_FILE = "sweep.json"
SWEEP_NUMBERS = (
    "guidance", "fid", "kid", "clip_score", "diversity", "precision", "recall", "steps", "seconds", "cpu_seconds",
)  # fmt: skip
SWEEP_STRINGS = ("sampler",)
OUTPUT_FILES = ("report.md", "report.html")


@dataclass
class MetricFile:
    file: str
    metric: str
    values: dict[str, float | int | None]  # the top-level numbers (None where the JSON has null)


@dataclass
class Run:
    name: str
    folder: Path
    metrics: list[MetricFile] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    notes: list[str]  # one label per point (the guidance scale, or the number of steps)


@dataclass
class Plot:
    file: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    log_x: bool = False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a sweep row must be a JSON object, got {type(row).__name__}")
    for key in SWEEP_NUMBERS:
        if key in row and row[key] is not None and not (_is_number(row[key]) and math.isfinite(row[key])):
            raise ValueError(f"{where}: {key!r} must be a finite number, got {row[key]!r}")
    for key in SWEEP_STRINGS:
        if key in row and row[key] is not None and not isinstance(row[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {row[key]!r}")
    return row


def read_run(folder: str | Path, name: str | None = None) -> Run:
    """The metric files and sweep rows of one run folder (see the module docs); raises when it holds neither."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {str(folder)!r} does not exist or is not a folder")
    run = Run(name or folder.resolve().name, folder)
    for path in sorted(folder.glob("*.json")):
        data = _read_json(path)
        if path.name == SWEEP_FILE:
            rows = data.get("rows") if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ValueError(f"{path}: expected a list of rows or an object with a 'rows' list")
            run.sweep = [_check_row(r, f"{path} row {i}") for i, r in enumerate(rows)]
            continue
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a metric file must hold one JSON object, got {type(data).__name__}")
        metric = data.get("metric") if isinstance(data.get("metric"), str) else path.stem
        numbers = {k: v for k, v in data.items() if _is_number(v) or (v is None and k != "metric")}
        run.metrics.append(MetricFile(path.name, metric, numbers))
    if not run.metrics and not run.sweep:
        raise ValueError(
            f"run folder {str(folder)!r} holds no *.json metric files and no {SWEEP_FILE} "
            "(write them with `unclip eval METRIC --json > DIR/METRIC.json`)"
        )
    return run


def read_runs(folders: list[str | Path]) -> list[Run]:
    """Every run folder; names are the folders' names, or their paths where two names collide."""
    if not folders:
        raise ValueError("a report needs at least one run folder")
    names = [Path(f).resolve().name for f in folders]
    return [read_run(f, str(f) if names.count(n) > 1 else n) for f, n in zip(folders, names, strict=True)]


# ---- tables ----------------------------------------------------------------------------------------------------
def _columns(dicts: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for d in dicts for k in d))


def metric_tables(runs: list[Run]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """One table per metric name: columns ``run, file`` then the union of the files' numbers."""
    by_metric: dict[str, list[tuple[str, MetricFile]]] = {}
    for run in runs:
        for m in run.metrics:
            by_metric.setdefault(m.metric, []).append((run.name, m))
    tables = {}
    for metric, entries in by_metric.items():
        cols = _columns([m.values for _, m in entries])
        rows = [[name, m.file, *(m.values.get(c) for c in cols)] for name, m in entries]
        tables[metric] = (["run", "file", *cols], rows)
    return tables


def sweep_table(runs: list[Run]) -> tuple[list[str], list[list[Any]]]:
    """All sweep rows with a ``run`` column: the known fields first, then any other scalar field."""
    rows = [(run.name, r) for run in runs for r in run.sweep]
    known = [k for k in (*SWEEP_NUMBERS, *SWEEP_STRINGS) if any(k in r for _, r in rows)]
    extra = [k for k in _columns([r for _, r in rows]) if k not in known and all(
        not isinstance(r.get(k), dict | list) for _, r in rows)]  # fmt: skip
    cols = known + extra
    return ["run", *cols], [[name, *(r.get(c) for c in cols)] for name, r in rows]


# ---- plots -----------------------------------------------------------------------------------------------------
def _series(runs: list[Run], need: tuple[str, ...], x: str, y: str, group: tuple[str, ...], note: str) -> list[Series]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        for r in run.sweep:
            if all(r.get(k) is not None for k in need):
                groups.setdefault((run.name, *(r.get(g) for g in group)), []).append(r)
    out = []
    for key, rows in groups.items():
        rows = sorted(rows, key=lambda r: r[note])  # ``note`` is one of ``need``: always present
        named = zip(group, key[1:], strict=True)
        parts = [key[0]] + [str(v) if g == "sampler" else f"{g}={_fmt(v)}" for g, v in named if v is not None]
        out.append(Series(", ".join(parts), [float(r[x]) for r in rows], [float(r[y]) for r in rows],
                          [_fmt(r[note]) for r in rows]))  # fmt: skip
    return out


def plots(runs: list[Run]) -> tuple[list[Plot], list[str]]:
    """The plots that the sweep rows allow, and a note for each one they do not."""
    made, notes = [], []
    s = _series(runs, ("guidance", "fid", "clip_score"), "clip_score", "fid", ("sampler", "steps"), "guidance")
    if s:
        made.append(Plot("fid_vs_clip_score.png", "FID against CLIP score over guidance (points: guidance scale)",
                         "CLIP score (100 × cosine)", "FID (lower is better)", s))  # fmt: skip
    else:
        notes.append("FID against CLIP score: no sweep row has guidance, fid and clip_score")
    s = _series(runs, ("guidance", "kid", "clip_score"), "clip_score", "kid", ("sampler", "steps"), "guidance")
    if s:  # KID's expectation does not depend on n: the trade-off to read at the small n of a CPU sweep
        made.append(Plot("kid_vs_clip_score.png", "KID against CLIP score over guidance (points: guidance scale)",
                         "CLIP score (100 × cosine)", "KID (lower is better)", s))  # fmt: skip
    s = _series(runs, ("guidance", "diversity"), "guidance", "diversity", ("sampler", "steps"), "guidance")
    if s:
        made.append(Plot("diversity_vs_guidance.png", "Diversity against guidance", "guidance scale",
                         "diversity (mean pairwise distance)", s))  # fmt: skip
    else:
        notes.append("diversity against guidance: no sweep row has guidance and diversity")
    stepped = [r for run in runs for r in run.sweep if r.get("steps") is not None]
    # CPU time where every stepped row has it (unclip eval sweep: one thread, so other work does not inflate it)
    clock = "cpu_seconds" if stepped and all(r.get("cpu_seconds") is not None for r in stepped) else "seconds"
    timed = [r for r in stepped if r.get(clock) is not None]
    # KID where every timed row has it (unbiased at small n), else FID, else CLIP score
    has = {q: bool(timed) and all(r.get(q) is not None for r in timed) for q in ("kid", "fid")}
    quality = "kid" if has["kid"] else "fid" if any(r.get("fid") is not None for r in timed) else "clip_score"
    s = _series(runs, (clock, "steps", quality), clock, quality, ("sampler", "guidance"), "steps")
    if s:
        xs = [v for ser in s for v in ser.x]
        label = {"kid": "KID (lower is better)", "fid": "FID (lower is better)"}.get(
            quality, "CLIP score (100 × cosine)"
        )
        axis = "CPU time per image (s)" if clock == "cpu_seconds" else "wall time (s)"
        made.append(Plot("quality_vs_time.png", "Quality against time over sampler and steps (points: steps)",
                         axis, label, s, log_x=min(xs) > 0 and max(xs) / min(xs) > 10))  # fmt: skip
    else:
        notes.append("quality against wall time: no sweep row has seconds, steps and fid (or clip_score)")
    return made, notes


def draw(plot: Plot, path: Path) -> None:
    """One PNG through matplotlib's Agg canvas (no pyplot: no global backend or figure state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in plot.series:
        ax.plot(s.x, s.y, marker="o", label=s.label)
        for x, y, note in zip(s.x, s.y, s.notes, strict=True):
            if note:
                ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if plot.log_x:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20 … seconds
        ax.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers rather than 10^0 …
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short log range
    ax.set(title=plot.title, xlabel=plot.xlabel, ylabel=plot.ylabel)
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


# ---- pages -----------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _md_table(cols: list[str], rows: list[list[Any]]) -> list[str]:
    cell = lambda v: _fmt(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _html_table(cols: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>"


def _sections(runs, tables, sweep, made, notes):
    """(heading level, heading, kind, payload) in page order; both pages render the same list."""
    out = []
    out.append((2, "Metrics", None, None))
    for metric, (cols, rows) in tables.items():
        out.append((3, metric, "table", (cols, rows)))
    if not tables:
        out.append((0, "", "text", "No metric files."))
    out.append((2, "Sweeps", None, None))
    out.append((0, "", "table", sweep) if sweep[1] else (0, "", "text", f"No {SWEEP_FILE} rows."))
    out.append((2, "Plots", None, None))
    for p in made:
        out.append((3, p.title, "image", p.file))
    for n in notes:
        out.append((0, "", "text", f"Not drawn: {n}."))
    return out


def render_markdown(title: str, runs: list[Run], sections) -> str:
    lines = [f"# {title}", "", "Runs: " + ", ".join(f"`{r.name}` ({r.folder})" for r in runs), ""]
    for level, heading, kind, payload in sections:
        if heading:
            lines += ["#" * level + " " + heading, ""]
        if kind == "table":
            lines += [*_md_table(*payload), ""]
        elif kind == "image":
            lines += [f"![{heading}]({payload})", ""]
        elif kind == "text":
            lines += [payload, ""]
    return "\n".join(lines)


def render_html(title: str, runs: list[Run], sections) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:72em;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>{e(title)}</h1>",
        "<p>Runs: " + ", ".join(f"<code>{e(r.name)}</code> ({e(str(r.folder))})" for r in runs) + "</p>",
    ]
    for level, heading, kind, payload in sections:
        if heading:
            parts.append(f"<h{level}>{e(heading)}</h{level}>")
        if kind == "table":
            parts.append(_html_table(*payload))
        elif kind == "image":
            parts.append(f'<img src="{e(payload)}" alt="{e(heading)}">')
        elif kind == "text":
            parts.append(f"<p>{e(payload)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _check_out(out: Path, runs: list[Run]) -> None:
    """Refuse an output folder whose replacement would delete anything but an earlier report."""
    target = out.resolve()
    for run in runs:
        folder = run.folder.resolve()
        if folder == target or target in folder.parents:
            raise ValueError(f"--out {str(out)!r} would replace the run folder {str(run.folder)!r}; choose another")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        foreign = [p.name for p in out.iterdir() if p.name not in OUTPUT_FILES and p.suffix != ".png"]
        if foreign:
            raise ValueError(
                f"--out {str(out)!r} holds files that are not a report (e.g. {foreign[0]!r}); it would be replaced "
                "as a whole, so choose a new or empty folder"
            )


@dataclass
class Report:
    out: Path
    runs: list[Run]
    tables: dict[str, tuple[list[str], list[list[Any]]]]
    sweep: tuple[list[str], list[list[Any]]]
    plots: list[Plot]
    notes: list[str]


def write_report(run_dirs: list[str | Path], out: str | Path, *, title: str = "unclip evaluation report") -> Report:
    """Read the run folders, then write ``out/report.md``, ``out/report.html`` and the plots, all or nothing."""
    runs = read_runs(run_dirs)
    out = Path(out)
    _check_out(out, runs)
    tables, sweep = metric_tables(runs), sweep_table(runs)
    made, notes = plots(runs)
    sections = _sections(runs, tables, sweep, made, notes)
    with atomic_directory(out) as tmp:
        for p in made:
            draw(p, tmp / p.file)
        (tmp / "report.md").write_text(render_markdown(title, runs, sections), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(title, runs, sections), encoding="utf-8")
    return Report(out, runs, tables, sweep, made, notes)
