"""Training throughput of the engine on a reference small model, with 1 and with 2 processes.

Trains the built-in ``toy`` stage (preset ``tiny``: a 16 px conv denoiser, 32 channels) through the real
``unclip train`` command, on the Shapes world by default, and reads samples/s from the run's metrics.jsonl,
leaving out the first logging window (start-up, first allocations). The 2-process run uses torchrun with the
gloo backend on the CPU (NCCL on a GPU machine) and the same global batch.

    .venv/bin/python benchmarks/train_throughput.py [--steps 80] [--batch-size 32] [--data shapes] [--procs 1 2]

Each process uses ``cpu_count // processes`` threads (or ``--threads``), so both figures use the same cores.
On a machine shared with other work, ``--threads 1`` avoids the slowdown of contending OpenMP threads.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(procs: int, args: argparse.Namespace, out: Path) -> dict[str, float]:
    train = ["train", "toy", "--preset", args.preset, "--data", args.data, "--out", str(out), "--no-progress"]
    train += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--checkpoint-every", "1000000"]
    train += ["--set", "train.log_every=10", "--set", "train.sample_count=0"]
    if args.device == "cuda":
        train += ["--mixed-precision", args.mixed_precision]
    if procs == 1:
        cmd = [sys.executable, "-m", "unclip.cli.main", *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
        cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "unclip.cli.main", *train]
    threads = args.threads or max(1, (os.cpu_count() or 1) // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{procs}-process run failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r["samples_per_s"] for r in rows[1:]] or [rows[-1]["samples_per_s"]]
    return {
        "samples_per_s": sum(steady) / len(steady),
        "wall_s": wall,
        "final_loss": rows[-1]["loss"],
        "threads_per_process": threads,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=32, help="global batch")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", default="shapes")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=0, help="threads per process (0: cores / processes)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--mixed-precision", default="bf16", help="with --device cuda")
    args = p.parse_args()
    import torch

    print(f"toy/{args.preset}, global batch {args.batch_size}, {args.steps} steps, data {args.data}, {args.device}")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        for procs in args.procs:
            r = run(procs, args, Path(tmp) / f"p{procs}")
            print(
                f"{procs} process(es) x {r['threads_per_process']} thread(s): {r['samples_per_s']:8.1f} samples/s "
                f"(steady state), wall {r['wall_s']:.1f} s incl. start-up, final loss {r['final_loss']:.4f}"
            )


if __name__ == "__main__":
    main()
