"""leave_process ends a process with its code and loses nothing it printed or logged, skipping finalization."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_leave_process_keeps_output_and_code_and_skips_atexit(tmp_path):
    log = tmp_path / "run.log"
    script = textwrap.dedent(
        f"""
        import atexit, logging, logging.handlers, sys
        from unclip.train.process_exit import leave_process
        # A buffering handler writes its records only when flushed or closed, as logging.shutdown does.
        buffered = logging.handlers.MemoryHandler(100, target=logging.FileHandler({str(log)!r}))
        logging.basicConfig(handlers=[buffered], level=logging.INFO)
        atexit.register(lambda: print("finalization ran"))
        sys.stdout.write("written without a newline")  # block-buffered into a pipe: lost without a flush
        sys.stderr.write("to stderr")
        logging.getLogger("run").info("logged line")
        leave_process(3)
        print("never reached")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "written without a newline"  # neither the atexit hook nor the line after it ran
    assert proc.stderr == "to stderr"
    assert "logged line" in log.read_text()
