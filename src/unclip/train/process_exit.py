"""Ending a process of a multi-process (torchrun / accelerate launch) run without a crash at exit.

With torch 2.13, a ``DistributedDataParallel`` wrapper keeps its gloo process group alive from C++ after
``destroy_process_group()`` (the group's worker threads, ``pt_gloo_runloop`` and ``gloo_tcp_loop``, are still running
when the interpreter shuts down; see pytorch/pytorch issues 107298 and 109478). The C++ static destructors at exit then
race those threads, and about one run in twenty on a loaded machine dies with ``terminate called without an active
exception`` (SIGABRT) after all its work is done, so the launcher reports the whole run as failed. Once the run's files
are written and closed, the process has nothing left for the interpreter's finalization to do, so it leaves with
``os._exit`` after flushing what it printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def leave_process(code: int) -> NoReturn:
    """Flush stdout, stderr and logging, then end the process at once with ``code``, skipping finalization."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe has nothing left to lose
            stream.flush()
    os._exit(code)
