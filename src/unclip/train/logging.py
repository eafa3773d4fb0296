"""What a run reports: a progress bar, ``metrics.jsonl`` always, TensorBoard when installed, sample grids.

Only the main process logs; the others get a logger whose methods do nothing.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def image_grid(images: Tensor, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> one (rows*H, cols*W, 3) uint8 mosaic with ``pad`` px white gutters."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"a sample grid needs (N, 3, H, W) images, got {tuple(images.shape)}")
    n, _, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = arr[i].permute(1, 2, 0).numpy()
    return grid


class RunLogger:
    def __init__(
        self, run_dir: Path, *, enabled: bool, total_steps: int, start_step: int, progress: bool = True
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._bar: Any = None
        self._tb: Any = None
        self._t0 = time.perf_counter()
        if not enabled:
            return
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._truncate_after(start_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
        try:  # TensorBoard stays optional: log to it only when it is installed.
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step or None)
        except ImportError:
            self._tb = None

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint: those steps are about to be trained again."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a half-written last line from a killed run
        self.metrics_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            shown = {k: metrics[k] for k in ("loss", "lr", "samples_per_s") if k in metrics}
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def save_grid(self, step: int, images: Tensor) -> Path | None:
        if not self.enabled:
            return None
        from PIL import Image

        out = self.run_dir / "samples" / f"step_{step:08d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        grid = image_grid(images)
        Image.fromarray(grid).save(out)
        if self._tb is not None:
            self._tb.add_image("samples", grid, step, dataformats="HWC")
        return out

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._file.close()


def _plain(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.item()
    if isinstance(v, float):
        return round(v, 8) if math.isfinite(v) else str(v)
    return v
