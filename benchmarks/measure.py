"""Timing and peak-memory helpers shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timed(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds one call takes: CUDA events on a GPU; on the CPU wall time, or this process's CPU time, which
    with one thread is the wall time an idle machine would show and is not inflated by other processes."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0
    now = time.process_time if clock == "cpu" else time.perf_counter
    t0 = now()
    fn()
    return now() - t0


def rss_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (``VmRSS``: the resident set now; ``VmHWM``: its high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def start_peak(device: torch.device) -> int:
    """Reset the peak counter and return the baseline in bytes (CUDA allocations, or the CPU resident set)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    except OSError:  # then VmHWM still holds an earlier peak: small peaks are underestimated
        print("warning: cannot reset VmHWM; small peaks are underestimated", file=sys.stderr)
    return rss_kib("VmRSS") * 1024


def peak_mib(device: torch.device, base: int) -> float:
    """Peak memory since :func:`start_peak` above its baseline, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return (rss_kib("VmHWM") * 1024 - base) / 2**20


def model_benchmark_parser(doc: str | None, *, needs: str, batch: int, batch_help: str, repeats: int):
    """The options of a benchmark that loads a pipeline folder: --model, --device, --batch, --repeats."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="src/unclip/assets/shapes-model", help=f"pipeline folder {needs}".strip())
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=batch, help=batch_help)
    p.add_argument("--repeats", type=int, default=repeats, help="timed calls of each variant (the best is kept)")
    return p


def print_before_now(header: str, best: dict[str, float], per: str, what: str, diff: float) -> None:
    """Print a two-variant race (the old way first): each one's best time, their ratio, and how far the outputs
    are apart, under a header naming the case and the machine."""
    import platform

    print(f"{header}; torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    width = max(len(name) for name in best)
    for name, seconds in best.items():
        print(f"  {name:{width}s} {seconds * 1e3:8.1f} ms per {per}")
    before, now = best.values()
    print(f"  ratio now / before: {now / before:.2f}; {what} differ by at most {diff:.1e}")
