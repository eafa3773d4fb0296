"""``unclip data check``: read a dataset the way training will, and say what is in it before any GPU time is spent.

Every record goes through the loader's own path (``decode_image``, the caption checks), so a record counted as
usable here is one training will use, and a problem named here is the one training would skip and count.
Reported: how many records are usable and why the others are not (with an example key each), the images'
sizes (how many would be upscaled to reach the training resolution), caption lengths, repeated captions, and,
given a CLIP, how many captions its context would truncate.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm


@dataclass
class DataReport:
    spec: str
    source: str  # the source's kind, e.g. "folder (metadata.jsonl)"
    records: int = 0
    usable: int = 0
    problems: dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first record key
    short_side: dict[str, float] = field(default_factory=dict)  # min / median / max, pixels
    aspect: dict[str, float] = field(default_factory=dict)  # width / height: min / median / max
    below_resolution: int = 0  # usable images whose short side is below `resolution` (upscaled in training)
    resolution: int = 0
    caption_words: dict[str, float] = field(default_factory=dict)  # min / median / max
    unique_captions: int = 0
    truncated: int | None = None  # captions longer than the CLIP's context, when a CLIP was given
    context_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


def source_kind(source) -> str:
    from unclip.data.caption_tables import ParquetSource
    from unclip.data.datasets import FolderSource, ShapesSource, ShardSource

    if isinstance(source, FolderSource):
        return "folder (metadata table)" if source.captions else "folder (.txt captions)"
    if isinstance(source, ShardSource):
        return f"WebDataset tar shards ({len(source.shards)})"
    if isinstance(source, ParquetSource):
        return f"Parquet ({len(source.files)} files, {len(source.shards)} row groups)"
    if isinstance(source, ShapesSource):
        return "Shapes world (generated)"
    return type(source).__name__


def _problem(message: str) -> str:
    """A record's problem without its key or details, so that problems group by kind: "KEY: unreadable image
    (OSError)" and "KEY: unreadable image: [Errno 2] ..." are both "unreadable image"."""
    reason = message.split(": ", 1)[1] if ": " in message else message
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip() or reason


def check_data(
    spec: str, *, n: int | None = None, resolution: int = 64, clip=None, progress: bool = False
) -> DataReport:  # fmt: skip
    """Read the first ``n`` records of ``spec`` (all of a finite dataset when None) and report on them."""
    from unclip.data.datasets import CorruptSample, StreamingSource, decode_image, parse_data_spec
    from unclip.data.embed import iter_records

    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    source = parse_data_spec(spec, resolution)
    if n is None and not isinstance(source, StreamingSource) and source.size() is None:
        raise ValueError(f"data {spec!r} is unlimited (Shapes world): give the number of records to check")
    report = DataReport(spec, source_kind(source), resolution=resolution)
    sides, aspects, words, captions = [], [], [], []
    problems: Counter[str] = Counter()
    total = n if n is not None else (None if isinstance(source, StreamingSource) else source.size())
    for record in tqdm(iter_records(source, n), total=total, desc="check", unit="record", disable=not progress):
        report.records += 1
        try:
            image = decode_image(record)
            if record.caption is None or not record.caption.strip():
                raise CorruptSample(f"{record.key}: {record.problem or 'empty caption'}")
        except CorruptSample as err:
            reason = _problem(str(err))
            problems[reason] += 1
            report.examples.setdefault(reason, record.key)
            continue
        report.usable += 1
        h, w = image.shape[:2]
        sides.append(min(h, w))
        aspects.append(w / h)
        report.below_resolution += min(h, w) < resolution
        words.append(len(record.caption.split()))
        captions.append(record.caption)
    report.problems = dict(problems.most_common())
    report.short_side, report.aspect, report.caption_words = _spread(sides), _spread(aspects), _spread(words)
    report.unique_captions = len(set(captions))
    tokenizer = getattr(clip, "tokenizer", None)
    if captions and hasattr(tokenizer, "hf") and hasattr(tokenizer, "context_length"):
        room = tokenizer.context_length - 2  # BOS and EOT frame every caption (unclip.clip.tokenizer)
        lengths = [len(e.ids) for e in tokenizer.hf.encode_batch(captions, add_special_tokens=False)]
        report.truncated = sum(length > room for length in lengths)
        report.context_length = tokenizer.context_length
    return report


def format_report(r: DataReport) -> str:
    def spread(d: dict[str, float], fmt: str) -> str:
        return "-" if not d else f"min {d['min']:{fmt}}, median {d['median']:{fmt}}, max {d['max']:{fmt}}"

    lines = [f"{r.spec}: {r.source}", f"records read   {r.records}", f"usable         {r.usable}"]
    for reason, count in r.problems.items():
        lines.append(f"  skipped {count:>6}  {reason} (e.g. {r.examples[reason]})")
    lines.append(f"short side     {spread(r.short_side, '.0f')} px")
    if r.usable:
        lines.append(f"               {r.below_resolution} below {r.resolution} px (upscaled in training)")
    lines.append(f"aspect (w/h)   {spread(r.aspect, '.2f')} (training crops the centre square)")
    lines.append(f"caption words  {spread(r.caption_words, '.0f')}; {r.unique_captions} distinct of {r.usable}")
    if r.truncated is not None:
        lines.append(f"truncated      {r.truncated} captions exceed the CLIP's context of {r.context_length} tokens")
    return "\n".join(lines)
