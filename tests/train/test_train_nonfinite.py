"""A batch whose loss is NaN must be skipped and counted, never applied to the weights or the EMA."""

import json
from pathlib import Path

import torch
from tiny_stage import TinyStage, make_folder

from unclip.cli.main import main
from unclip.train import StepOutput, register_stage
from unclip.train.checkpoint import list_checkpoints, load_checkpoint

POISONED_STEPS = {3, 6}  # 1-based steps whose batch yields a NaN loss


class PoisonedStage(TinyStage):
    name = "poisoned"

    def loss(self, model, batch, config):
        out = super().loss(model, batch, config)
        step = int(batch.index.min()) // len(batch) + 1  # batch size 8, one process: positions 8(k-1) … 8k-1
        if step in POISONED_STEPS:
            return StepOutput(out.loss * float("nan"), out.metrics)
        return out


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    register_stage("poisoned", PoisonedStage, replace=True)
    data = make_folder(tmp_path / "data", n=24)
    out = tmp_path / "run"
    args = ["train", "poisoned", "--preset", "test", "--data", f"folder:{data}", "--out", str(out), "--no-progress",
            "--steps", "8", "--set", "train.checkpoint_every=1", "--set", "train.keep_last=8",
            "--set", "train.log_every=1", "--set", "train.grad_clip=1.0"]  # fmt: skip
    assert main(args) == 0
    ckpts = dict(list_checkpoints(out / "checkpoints"))
    weights = {s: load_checkpoint(p).tensors for s, p in ckpts.items()}
    for s in range(1, 9):
        for part in ("model", "ema"):
            assert all(torch.isfinite(t).all() for t in weights[s][part].values() if t.is_floating_point())
    for s in POISONED_STEPS:  # a skipped step leaves model and EMA exactly as the previous step left them
        for part in ("model", "ema"):
            assert all(torch.equal(weights[s][part][k], weights[s - 1][part][k]) for k in weights[s][part])
    assert not all(torch.equal(weights[5]["model"][k], weights[4]["model"][k]) for k in weights[5]["model"])
    rows = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_steps"] for r in rows] == [0, 0, 1, 1, 1, 2, 2, 2]
