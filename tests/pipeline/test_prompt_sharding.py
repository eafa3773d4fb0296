"""A prompt-file run split over torchrun processes: the same folder as one process, each image made once, resumable,
and a refusal on the main process reaches every process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_prompt_files import CHEAP
from tiny_stack import tiny_pipeline

from unclip.cli.main import main
from unclip.pipeline.sharding import Shard, process_device, world_from_environment

HERE = Path(__file__).parent
REPO = HERE.parents[1]
PROMPTS = "a red circle\ntwo blue squares\na green triangle\nthree yellow circles\n"


def test_shares_are_disjoint_cover_everything_and_differ_by_one_at_most():
    items = list(range(11))
    shares = [Shard(r, 3).take(items) for r in range(3)]
    assert sorted(x for share in shares for x in share) == items and [len(s) for s in shares] == [4, 4, 3]
    assert Shard().take(items) == items and Shard().is_main and not Shard(1, 2).is_main
    for rank, world in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="outside a world"):
            Shard(rank, world)


def test_the_environment_names_the_process_and_its_gpu(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert world_from_environment() == (0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_environment() == (5, 8, 1)
    assert process_device("cuda", 1) == "cuda:1"
    assert process_device("cuda:0", 1) == "cuda:0" and process_device("cpu", 1) == "cpu"  # an explicit choice stays
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        world_from_environment()


def test_a_main_process_refusal_is_raised_as_itself_alone():
    def refuse():
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError, match="gone"):
        Shard().main_first(refuse)
    ran = []
    Shard().main_first(lambda: ran.append(1))
    assert ran == [1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(upsampler=False, settings=CHEAP).save_pretrained(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(counts: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), str(HERE / "sharded_generate.py"), str(counts), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _sampled(counts: Path) -> list[list[int]]:
    return [json.loads((counts / f"rank{r}.json").read_text()) for r in range(2)]


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


@pytest.mark.slow
def test_two_processes_make_the_folder_one_process_makes(model, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS)
    # --num-images, not --n: torchrun's own parser finds a bare --n ambiguous (--nnodes, --node-rank...).
    args = ["generate", "--prompts", str(prompts), "--num-images", "2", "--seed", "3", "--batch-size", "2"]
    args += ["--model", str(model)]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()

    two = tmp_path / "two"
    proc = _torchrun(tmp_path / "c1", *args, "--out", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("8 images of 4 prompts") == 1  # only the main process reports
    first, second = _sampled(tmp_path / "c1")
    assert sorted(first + second) == list(range(3, 11)) and len(first) == len(second) == 4  # each image once

    one_files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))
    assert sorted(p.relative_to(two) for p in two.rglob("*")) == one_files
    for name in one_files:
        a, b = tmp_path / "one" / name, two / name
        if name.suffix == ".png":
            assert np.abs(_pixels(a) - _pixels(b)).max() <= 1, name
        else:
            assert json.loads(a.read_text()) == json.loads(b.read_text()), name

    # Resumable: the missing images are split between the processes again, the rest left alone.
    missing = ["p00001_000", "p00002_001", "p00003_000"]
    for stem in missing:
        (two / f"{stem}.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in two.glob("p*.png") if p.stem not in missing}  # not the sheet
    proc = _torchrun(tmp_path / "c2", *args, "--out", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(3 made now, 5 kept from before)" in proc.stdout
    assert sorted(s for rank in _sampled(tmp_path / "c2") for s in rank) == [5, 8, 9]
    assert {name: (two / name).stat().st_mtime_ns for name in kept} == kept

    # A refusal on the main process (another seed into this folder) ends every process, none left waiting.
    proc = _torchrun(tmp_path / "c3", *args, "--seed", "4", "--out", str(two))  # the last --seed wins
    assert proc.returncode != 0
    assert proc.stderr.count("holds images made with other seed") == 2, proc.stderr[-3000:]
    assert proc.stderr.count("the main process refused") == 1  # the other heard it from the main process
    assert _sampled(tmp_path / "c3") == [[], []]


def test_only_prompt_runs_are_split(monkeypatch, model, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["generate", "a red circle", "--model", str(model)]) == 2
    assert "share the images of a --prompts run only" in capsys.readouterr().err
