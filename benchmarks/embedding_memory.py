"""Peak memory of prior training's data access: the whole folder in memory against ``EmbeddingShards``.

Each reader runs in a fresh process that opens the folder and maps ``--steps`` batches of stream positions to
rows and tensors exactly as the prior stages do (``data.batch(data.rows(positions))``), then prints the rise of
its resident set's high-water mark (VmHWM) over the baseline after imports, and the time per batch.
``--reshard K`` first rewrites the folder into K shards in a temporary folder, to show the bound of one or two
shards on a folder of many.

    .venv/bin/python benchmarks/embedding_memory.py [--folder runs/mini/embeddings] [--reshard 10] [--steps 300]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import rss_kib  # benchmarks/ is on sys.path when run as a script


def _child(folder: str, reader: str, steps: int, batch: int) -> None:
    import torch

    from unclip.data.embedding_shards import EmbeddingShards
    from unclip.prior.embeddings import load_embeddings

    base = rss_kib("VmHWM")
    t0 = time.perf_counter()
    data = load_embeddings(folder) if reader == "memory" else EmbeddingShards(folder)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    for g in range(steps):
        data.batch(data.rows(torch.arange(g * batch, (g + 1) * batch), seed=0))
    per_batch = (time.perf_counter() - t0) / steps
    peak = (rss_kib("VmHWM") - base) / 1024
    print(f"{reader:7s} pairs {len(data):7d}  open {opened:6.2f} s  peak +{peak:7.1f} MiB  "
          f"{per_batch * 1e3:6.2f} ms/batch")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="runs/mini/embeddings")
    parser.add_argument("--reshard", type=int, default=0, help="rewrite into this many shards first (0: as is)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--child", choices=["memory", "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.folder, args.child, args.steps, args.batch_size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if args.reshard:
            from unclip.prior.embeddings import load_embeddings, write_embeddings

            data = load_embeddings(folder)
            folder = str(write_embeddings(Path(tmp) / "emb", data, shard_size=-(-len(data) // args.reshard)))
            del data
        print(f"{folder}: {args.steps} batches of {args.batch_size}")
        for reader in ("memory", "stream"):
            cmd = [sys.executable, __file__, "--folder", folder, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--child", reader]  # fmt: skip
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
