"""Training throughput of the bundled model's stages through ``unclip train``, for one or two source trees.

The GPU lease that trained the bundle showed the device 40-95 % busy, and a second lease with 16 slower cores
trained the decoder and upsampler 25-45 % slower than the first's 4 (docs/training.md): the host, not the data or
the GPU, bounded the small networks. Each host read of a device value, and each blocking host-to-device copy,
makes the host wait for every queued kernel (docs/benchmarks.md, "Host waits in a training step"). This script
runs each stage for a few dozen steps at the bundle's preset and batch, and prints samples/s (leaving out the first
logging window: start-up, allocations, cuDNN autotuning), for the working tree and, with ``--baseline-src``, for
another checkout's ``src`` (e.g. ``git worktree add /tmp/base ba72d34``, the commit before the host-wait fixes),
side by side as a ratio from the same run.

    python benchmarks/train_stage_throughput.py --device cuda [--stages clip decoder upsampler toy]
        [--steps 60] [--workers 8] [--precision no bf16] [--baseline-src /tmp/base/src] [--json OUT.json]

On the CPU (``--device cpu --preset tiny``) it checks that the runs work; CPU figures say little about host waits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
BUNDLE_CLIP = SRC / "unclip" / "assets" / "shapes-model" / "clip"

# The bundle's preset and batch per stage (docs/training.md, `bundle`); tiny presets for a CPU check.
STAGES = {
    "clip": ("small", 256, []),
    "decoder": ("compact", 128, ["--set", f"model.clip={BUNDLE_CLIP}"]),
    "upsampler": ("compact", 64, []),
    "toy": ("tiny", 256, []),
}
TINY_BATCH = {"clip": 8, "decoder": 4, "upsampler": 4, "toy": 16}


def run_stage(src: Path, stage: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    preset, batch, extra = STAGES[stage]
    if args.preset == "tiny":
        preset, batch = "tiny", TINY_BATCH[stage]
        if stage == "decoder":
            extra = ["--set", f"model.clip={args.tiny_clip}"]
    cmd = [sys.executable, "-m", "unclip.cli.main", "train", stage, "--preset", preset, "--data", "shapes"]
    cmd += ["--out", str(out), "--steps", str(args.steps), "--batch-size", str(batch), "--no-progress", *extra]
    cmd += [
        "--set",
        f"train.log_every={args.log_every}",
        "--set",
        "train.sample_count=0",
        "--set",
        "train.max_minutes=0",
    ]
    cmd += ["--set", "train.checkpoint_every=1000000", "--set", f"train.num_workers={args.workers}"]
    cmd += ["--set", f"train.mixed_precision={args.precision}"]
    env = {**os.environ, "PYTHONPATH": str(src)}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} from {src} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r["samples_per_s"] for r in rows[1:]] or [rows[-1]["samples_per_s"]]
    return {"samples_per_s": sum(steady) / len(steady), "windows": len(steady), "batch": batch, "preset": preset}


def tiny_clip_folder(folder: Path) -> Path:
    import torch

    from unclip.clip import CLIP, PRESETS, make_tokenizer

    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    return CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).save_pretrained(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=["clip", "decoder", "upsampler"], choices=sorted(STAGES))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=8, help="data-loading processes per run")
    p.add_argument("--precision", default="no", help="train.mixed_precision: no (fp32) or bf16")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--preset", choices=("bundle", "tiny"), default="bundle", help="tiny: a quick CPU check")
    p.add_argument("--baseline-src", type=Path, help="another checkout's src folder, run the same way")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    sys.path.insert(0, str(SRC))
    import torch

    trees = [("this tree", SRC)] + ([("baseline", args.baseline_src.resolve())] if args.baseline_src else [])
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" and torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, GPU {gpu}, precision {args.precision}, "
          f"{args.workers} workers, {args.steps} steps (first window of {args.log_every} left out)")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        args.tiny_clip = tiny_clip_folder(Path(tmp) / "tiny_clip") if args.preset == "tiny" else None
        header = f"{'stage':<10} {'preset':<8} {'batch':>5} " + " ".join(f"{n + ' (samples/s)':>22}" for n, _ in trees)
        print(header + ("   this / baseline" if len(trees) == 2 else ""))
        for stage in args.stages:
            got = {name: run_stage(src, stage, args, Path(tmp) / f"{stage}_{i}") for i, (name, src) in enumerate(trees)}
            first = next(iter(got.values()))
            line = f"{stage:<10} {first['preset']:<8} {first['batch']:>5} "
            line += " ".join(f"{g['samples_per_s']:>22.1f}" for g in got.values())
            if len(trees) == 2:
                line += f"   {got['this tree']['samples_per_s'] / got['baseline']['samples_per_s']:>16.2f}"
            print(line, flush=True)
            rows.append({"stage": stage, **{name: g for name, g in got.items()}})
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "precision": args.precision, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
