"""End-to-end runs of the engine on the tiny test stage: run folder, loss, CLI errors, exact resume."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_stage import make_folder, register

from unclip.cli.main import main
from unclip.train.checkpoint import latest_checkpoint, list_checkpoints

HERE = Path(__file__).parent
REPO = HERE.parents[1]


@pytest.fixture(autouse=True)
def _tiny_registered():
    register()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), n=24, corrupt=2)


def _args(data, out, *extra):
    return ["train", "tiny", "--data", f"folder:{data}", "--out", str(out), "--no-progress", *extra]


def _final(out):
    c = latest_checkpoint(Path(out) / "checkpoints")
    return c


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_run_folder_is_self_describing_and_loss_falls(data, tmp_path):
    out = tmp_path / "run"
    assert main(_args(data, out, "--steps", "40", "--set", "train.log_every=1", "--sample-every", "20")) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["stage"] == "tiny" and config["preset"] == "test" and config["train"]["steps"] == 40
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [30, 35, 40]  # every 5, keep the last 3
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 41))
    first, last = (sum(r["loss"] for r in rows[i : i + 8]) / 8 for i in (0, 32))
    assert last < 0.8 * first
    assert rows[-1]["skipped_samples"] > 0  # the two corrupt files came up and were counted
    assert rows[0]["lr"] == pytest.approx(1e-3)  # warm-up: 3e-3 * 1/3
    grids = sorted(p.name for p in (out / "samples").iterdir())
    assert grids == ["step_00000020.png", "step_00000040.png"]
    assert Image.open(out / "samples" / grids[0]).size == (4 * 10 + 2, 4 * 10 + 2)  # 16 tiles of 8 px + gutters


def test_resume_from_a_checkpoint_is_bitwise_exact(data, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_args(data, full, "--steps", "20")) == 0
    # A copy of the run as it stood at step 10: config and the step-10 checkpoint only.
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "config.json", part / "config.json")
    shutil.copytree(full / "checkpoints" / "step_00000010", part / "checkpoints" / "step_00000010")
    assert main(_args(data, part, "--resume")) == 0
    a, b = _final(full), _final(part)
    assert a.step == b.step == 20
    for group in ("model", "ema"):
        assert all(torch.equal(a.tensors[group][k], b.tensors[group][k]) for k in a.tensors[group])
    assert a.state["ranks"][0]["skipped"] == b.state["ranks"][0]["skipped"]


def test_bad_input_gets_one_clear_error(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "nope", "--data", "shapes", "--out", str(out)]) == 2
    assert "unknown stage 'nope'" in capsys.readouterr().err
    assert main(_args(data, out, "--preset", "huge")) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert main(_args(tmp_path / "missing", out)) == 2
    assert "missing' does not exist" in capsys.readouterr().err
    assert main(_args(data, out, "--batch-size", "7", "--set", "train.grad_accum=2")) == 2
    assert "does not split" in capsys.readouterr().err
    assert main(_args(data, out, "--set", "model.depth=3")) == 2
    assert "unknown key(s) depth" in capsys.readouterr().err
    assert not out.exists()  # nothing was written by any of them
    assert main(_args(data, out, "--steps", "5")) == 0
    capsys.readouterr()
    assert main(_args(data, out, "--steps", "5")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(_args(data, out, "--resume", "--lr", "0.5", "--set", "model.hidden=32")) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "train.lr" in err and "model.hidden" in err


def test_a_run_that_fails_before_its_first_step_takes_back_what_it_created(tmp_path, capsys):
    bad = make_folder(tmp_path / "bad", n=0, corrupt=3)  # every sample corrupt: the loader gives up
    out = tmp_path / "run"
    assert main(_args(bad, out, "--steps", "2")) == 2
    assert "could not be used" in capsys.readouterr().err
    assert not out.exists()  # no config.json left to make the retry say "already holds a run"
    mine = tmp_path / "mine"  # a folder the user made, holding their own file: only the run's files go
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(_args(bad, mine, "--steps", "2")) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    good = make_folder(tmp_path / "good", n=8)
    assert main(_args(good, mine, "--steps", "2")) == 0  # the retry runs into the same folder
    assert (mine / "config.json").is_file() and _final(mine).step == 2


def test_seeds_out_of_range_are_refused_by_name(data, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        main(_args(data, out, "--seed", str(2**64)))
    assert "argument --seed: 18446744073709551616 is out of range" in capsys.readouterr().err
    assert main(_args(data, out, "--set", f"train.seed={2**63}")) == 2
    assert "train.seed must be an integer from 0 to 2**63 - 1" in capsys.readouterr().err
    assert not out.exists()


def test_dry_run_prints_resolved_config(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(data, out, "--dry-run", "--lr", "0.25", "--set", "model.hidden=16", "--preset", "wide")) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 0.25 and cfg["model"]["hidden"] == 16 and cfg["preset"] == "wide"
    assert not out.exists()


# Exact resume after a real crash: a subprocess killed at a random moment, then resumed.
LONG = ("--steps", "150", "--checkpoint-every", "7")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    register()
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(_args(data, out, *LONG)) == 0
    return _final(out)


def _spawn(data, out, *extra):
    cmd = [sys.executable, str(HERE / "tiny_stage.py"), *_args(data, out, *LONG, *extra)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc, out, step=1, timeout=60.0):
    """Wait until a checkpoint at `step` or later exists; the newest step is returned."""
    deadline = time.time() + timeout
    while not (steps := [s for s, _ in list_checkpoints(out / "checkpoints")]) or max(steps) < step:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"no checkpoint at step {step} or later appeared"
        time.sleep(0.005)
    return max(steps)


def _assert_same_weights(ref, got):
    assert got.step == ref.step == 150
    for group in ("model", "ema", "optimizer"):
        diff = [k for k in ref.tensors[group] if not torch.equal(ref.tensors[group][k], got.tensors[group][k])]
        assert not diff, f"{group} tensors differ after resume: {diff}"


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_is_bitwise_exact(data, tmp_path, reference):
    # The moment is drawn from the run's own pace, so that a fast machine does not finish the run first: the time
    # between two checkpoints gives the time left, and the kill lands uniformly in its first 80%. Should the pace
    # quicken enough that the run ends anyway, a fresh run is killed within a shorter window.
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        proc = _spawn(data, out)
        first = _wait_for_checkpoint(proc, out)
        start = time.perf_counter()
        second = _wait_for_checkpoint(proc, out, first + 1)
        per_step = (time.perf_counter() - start) / (second - first)
        delay = random.uniform(0.0, max(0.0, 0.8 / 2**attempt * per_step * (150 - second)))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        killed_at = max(s for s, _ in list_checkpoints(out / "checkpoints"))
        print(f"SIGKILL {delay:.2f}s after step {second} ({per_step * 1e3:.1f} ms a step); newest: {killed_at}")
        if proc.returncode == -signal.SIGKILL:
            break
    else:
        pytest.fail(f"three runs ended before they could be killed (rc {proc.returncode})")
    resumed = _spawn(data, out, "--resume")
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert f"at step {killed_at}\n" in stdout  # it continued from the newest complete checkpoint
    _assert_same_weights(reference, _final(out))


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_checkpoint(data, tmp_path, reference):
    out = tmp_path / "run"
    proc = _spawn(data, out)
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    stopped = int(re.search(r"stopped at step (\d+):", stdout).group(1))
    assert stopped < 150 and max(s for s, _ in list_checkpoints(out / "checkpoints")) == stopped
    resumed = _spawn(data, out, "--resume")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    _assert_same_weights(reference, _final(out))


def test_gradient_accumulation_matches_one_big_batch(data, tmp_path):
    # Micro-batches of one step are consecutive slices of the same global batch, with the same per-sample seeds.
    common = ["--steps", "6", "--batch-size", "8", "--set", "model.dropout=0"]
    assert main(_args(data, tmp_path / "a", *common)) == 0
    assert main(_args(data, tmp_path / "b", *common, "--grad-accum", "2")) == 0
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    diff = max((a.tensors["model"][k] - b.tensors["model"][k]).abs().max().item() for k in a.tensors["model"])
    assert diff < 1e-5
    assert b.state["data"]["micro_batches_consumed"] == 12


def test_time_budget_stops_with_a_final_checkpoint_and_resumes(data, tmp_path, monkeypatch, capsys):
    """train.max_minutes: a fake clock that advances 1 s per reading stops the run part-way (not at `steps`),
    the last step is checkpointed, and a resume without the budget finishes the run."""
    import unclip.train.engine as engine

    clock = iter(range(10**6))
    monkeypatch.setattr(engine.time, "perf_counter", lambda: float(next(clock)))
    out = tmp_path / "run"
    budget = ["--steps", "40", "--set", "train.max_minutes=0.5", "--set", "train.log_every=1"]
    assert main(_args(data, out, *budget)) == 0
    stopped = _final(out).step
    assert 1 <= stopped < 40  # 30 fake seconds at a few readings per step
    assert _metrics(out)[-1]["step"] == stopped
    assert f"time budget of 0.5 min reached at step {stopped}" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(_args(data, out, "--steps", "40", "--resume")) == 0
    assert _final(out).step == 40
