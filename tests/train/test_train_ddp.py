"""Two processes on the CPU (gloo) must train the same weights as one process with the same global batch."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from tiny_stage import TinyConfig, TinyStage, make_folder, register

from unclip.cli.main import main
from unclip.train.checkpoint import latest_checkpoint

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    """``tiny_stage.py ARGS`` under torchrun with 2 processes. On a timeout (processes that disagree hang in a
    collective) torchrun is sent SIGTERM, which it passes on to its workers (each in a session of its own, out of
    reach of a group kill), so that no worker outlives the test; output goes through files, which, unlike pipes,
    a stray worker cannot hold open."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), str(HERE / "tiny_stage.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **env}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc, timed_out = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True), False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)  # torchrun escalates to SIGKILL after 30 s
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    if timed_out:
        pytest.fail(f"torchrun did not finish in {timeout:g} s: {result.stderr[-2000:]}")
    return result


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    register()
    data = make_folder(tmp_path / "data", n=24, corrupt=1)
    # No dropout: its masks are drawn per process, the one thing that rightly differs between the two runs.
    common = ["train", "tiny", "--data", f"folder:{data}", "--no-progress", "--steps", "12", "--batch-size", "8"]
    common += ["--set", "model.dropout=0", "--set", "train.grad_clip=0.05"]  # small clip: the norm is all-reduced
    assert main([*common, "--out", str(tmp_path / "one")]) == 0

    proc = _torchrun([*common, "--out", str(tmp_path / "two")], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished at step 12") == 1  # only the main process reports

    one, two = latest_checkpoint(tmp_path / "one" / "checkpoints"), latest_checkpoint(tmp_path / "two" / "checkpoints")
    assert one.step == two.step == 12
    assert two.state["config"]["world_size"] == 2 and len(two.state["ranks"]) == 2
    assert set(two.tensors["rng"]) == {"rank0.torch", "rank1.torch"}
    diff = max((one.tensors["model"][k] - two.tensors["model"][k]).abs().max().item() for k in one.tensors["model"])
    torch.manual_seed(0)  # the engine seeds the initial weights with the run seed (0)
    init = TinyStage().build(TinyConfig(dropout=0.0)).state_dict()
    moved = max((one.tensors["model"][k] - init[k]).abs().max().item() for k in init)
    print(f"2-process vs 1-process max |weight difference| after 12 steps: {diff:.3g}")
    assert diff < 1e-5
    assert moved > 1e-3  # the comparison is not vacuous: the weights did move
    # The same samples were skipped in both runs, counted over all processes.
    assert sum(r["skipped"] for r in two.state["ranks"]) == one.state["ranks"][0]["skipped"] > 0


@pytest.mark.slow
def test_two_processes_stop_together_when_one_finds_the_time_budget_spent(tmp_path):
    """Rank 1's clock runs 1000 times fast: it finds the 3-second budget spent within a few steps while rank 0 would
    train on. Left to themselves, rank 1 would enter the final checkpoint's gather while rank 0 waits in a
    gradient all-reduce (a hang, or a crash); agreed each step, both stop at the same step."""
    register()
    data = make_folder(tmp_path / "data", n=24)
    args = ["train", "tiny", "--data", f"folder:{data}", "--no-progress", "--steps", "100000", "--batch-size", "8"]
    args += ["--set", "train.max_minutes=0.05", "--out", str(tmp_path / "two")]
    proc = _torchrun(args, timeout=120, TINY_FAST_CLOCK_RANK="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "time budget of 0.05 min reached" in proc.stdout
    final = latest_checkpoint(tmp_path / "two" / "checkpoints")
    assert final.step < 1000 and len(final.state["ranks"]) == 2  # stopped by rank 1's clock, long before rank 0's
