"""Training images per CPU second: Shapes world rendered on the fly against the same samples pre-rendered as shards.

On the GPU lease that trained the bundled model the data loaders, not the GPU, set the pace (4 CPU cores feeding
three trainings; docs/training.md). This measures the per-sample CPU cost of the two ways to feed a stage, through
the loader's own per-sample path (``Source.get`` / ``ShardSource.records``, ``decode_image``,
``to_training_image``):

* ``shapes``: ``ShapesSource`` renders each scene (at the renderer's size, then resized to the stage's);
* ``shards``: ``unclip data shapes --shards`` wrote the same scenes once as PNG in tar shards at the largest
  resolution; the loader reads, decodes and resizes them.

    .venv/bin/python benchmarks/data_loading.py                       # 2,000 samples at 32, 64 and 128 px
    .venv/bin/python benchmarks/data_loading.py --n 500 --res 64

Times are this process's CPU time (one thread), so other work on the machine does not inflate them; the one-off
cost of writing the shards is reported beside them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from unclip.data.datasets import ShapesSource, ShardSource, decode_image
from unclip.data.loader import to_training_image
from unclip.data.shapes import ShapesWorld
from unclip.data.shapes.export import write_shards


def cpu_rate(samples, resolution: int) -> tuple[float, int]:
    """(samples per CPU second, count) for turning each record into a training tensor."""
    start, count = time.process_time(), 0
    for record in samples:
        to_training_image(decode_image(record), resolution)
        count += 1
    return count / max(time.process_time() - start, 1e-9), count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="samples per measurement")
    p.add_argument("--res", type=int, nargs="+", default=[32, 64, 128], help="stage resolutions")
    p.add_argument("--shard-res", type=int, default=0, help="resolution the shards are rendered at (0: the largest)")
    args = p.parse_args()
    torch.set_num_threads(1)
    shard_res = args.shard_res or max(args.res)
    print(f"{args.n} samples per row, one thread, CPU time; load average {os.getloadavg()[0]:.2f}\n")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        shards = write_shards(ShapesWorld("train", resolution=shard_res), Path(tmp), args.n, shard_size=500)
        write_s = time.process_time() - start
        size = sum(s.stat().st_size for s in shards)
        print(f"writing {args.n} samples at {shard_res} px as shards: {write_s:.1f} CPU s, "
              f"{size / args.n / 1024:.1f} KiB per sample\n")  # fmt: skip
        print("| stage resolution | rendered on the fly (samples / CPU s) | from shards (samples / CPU s) | speed-up |")
        print("|---|---|---|---|")
        source = ShardSource([str(s) for s in shards])
        for res in args.res:
            live = ShapesSource("train", 0, res)
            rendered, _ = cpu_rate((live.get(i) for i in range(args.n)), res)
            read, count = cpu_rate((r for s in source.shards for r in source.records(s)), res)
            assert count == args.n, f"read {count} of {args.n} samples back from the shards"
            print(f"| {res} px | {rendered:,.0f} | {read:,.0f} | **{read / rendered:.1f}×** |")


if __name__ == "__main__":
    main()
