"""``unclip export``: a run folder's newest valid checkpoint (or the one of a chosen step) → the stage's
self-describing model folder.

The EMA weights are exported by default (what the paper and every diffusion codebase sample from); the raw
weights with ``ema=False``.
"""

from __future__ import annotations

import json
from pathlib import Path

from unclip.model_folder import load_weights
from unclip.train import checkpoint as ckpt
from unclip.train.config import RunConfig
from unclip.train.stage import get_stage


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, ema: bool = True, stage: str | None = None, step: int | None = None
) -> Path:
    """Export ``run_dir`` into ``out_dir``; ``stage``, if given, must be the run's stage; ``step``, if given, picks
    that step's checkpoint instead of the newest (e.g. an earlier one that evaluated better)."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.json")
    run = RunConfig.from_json(json.loads(config_file.read_text(encoding="utf-8")))
    if stage is not None and run.stage != stage:
        raise ValueError(f"{run_dir} is a {run.stage!r} run, not a {stage!r} run")
    if step is None:
        restored = ckpt.latest_checkpoint(run_dir / "checkpoints")
        if restored is None:
            raise FileNotFoundError(f"{run_dir}/checkpoints holds no valid checkpoint")
    else:
        kept = dict(ckpt.list_checkpoints(run_dir / "checkpoints"))
        if step not in kept:
            raise FileNotFoundError(
                f"{run_dir}/checkpoints has no checkpoint of step {step}; it keeps steps "
                f"{', '.join(map(str, kept)) or 'none'}"
            )
        restored = ckpt.load_checkpoint(kept[step])  # a corrupt one is a CheckpointError naming the file
    st = get_stage(run.stage)
    config = st.config_from_dict(run.model)
    st.prepare(config)
    model = st.build(config)
    part = "ema" if ema else "model"
    load_weights(model, restored.tensors[part], f"{restored.path} ({part})")
    return st.export(model.eval(), config, out_dir)
