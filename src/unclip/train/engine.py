"""The one training loop every stage runs through, on Hugging Face Accelerate (DESIGN.md §6).

The same code runs on one CPU, one GPU or many processes (``accelerate launch`` / ``torchrun``): Accelerate
owns the process group, DDP wrapping, autocast and the fp16 grad scaler; this loop owns the order of events
and everything that has to survive a crash. Exact resume rests on three facts:

1. which samples a step sees, and the per-sample seeds of their noise, are functions of the step alone
   (``unclip.data.loader``);
2. every other random number comes from RNG states saved in the checkpoint and restored just before the
   first resumed step (sampling grids run under ``fork_rng`` so they never shift those states);
3. the learning rate is a pure function of the step, and the optimizer, EMA and scaler states are saved whole.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unclip.data.embedding_source import open_source, stream_type
from unclip.data.loader import MicroBatch, make_loader, mix_seed
from unclip.model_folder import load_weights, read_weights
from unclip.models.memory_format import set_channels_last
from unclip.train import checkpoint as ckpt
from unclip.train.config import RunConfig
from unclip.train.ema import EMA
from unclip.train.logging import RunLogger
from unclip.train.run_folder import folder_entries, prepare_run_dir, remove_new_entries
from unclip.train.schedule import lr_at
from unclip.train.stage import Batch, Stage, as_floats, get_stage

CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float | None
    skipped: int  # corrupt samples skipped over the whole run, all processes
    samples_per_s: float
    interrupted: bool
    main_process: bool = True  # only the main process reports in a multi-process run


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary (and checkpoint); a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        with contextlib.suppress(ValueError):  # signal handlers can only be set from the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _accelerator(run: RunConfig) -> Any:
    from accelerate import Accelerator

    # Accelerate picks gloo for CPU process groups only when told the run is on the CPU.
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=run.train.mixed_precision)


@dataclass
class _Attempt:
    """What a failed run leaves to clean up: whether this process writes the run folder, its logger, and whether
    a step was trained (before that, the folder holds nothing a user could want: no checkpoint, no metrics)."""

    main: bool = False
    logger: RunLogger | None = None
    stepped: bool = False


def train(run: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``run`` into ``run_dir``; with ``resume``, continue from its newest valid checkpoint.

    A new run that fails before its first step (every sample corrupt, a stage that cannot build, Ctrl-C twice)
    takes back the files it created, so that the same command can be run again once the cause is fixed instead
    of meeting "already holds a run"; what the folder held before is never touched."""
    run_dir = Path(run_dir)
    before = folder_entries(run_dir)
    attempt = _Attempt()
    try:
        return _train(run, run_dir, resume, progress, attempt)
    except BaseException:
        if attempt.logger is not None:
            attempt.logger.close()
        if attempt.main and not resume and not attempt.stepped:
            remove_new_entries(run_dir, before)
        raise


def _train(run: RunConfig, run_dir: Path, resume: bool, progress: bool, attempt: _Attempt) -> TrainResult:
    stage: Stage[Any] = get_stage(run.stage)
    model_cfg = stage.config_from_dict(run.model)
    tc = run.train
    accelerator = _accelerator(run)
    rank, world = accelerator.process_index, accelerator.num_processes
    attempt.main = accelerator.is_main_process
    run.world_size = world
    local_batch = tc.local_batch(world)
    stage.prepare(model_cfg)  # external resources (a CLIP, embeddings) are checked before any work
    resolution = stage.resolution(model_cfg)
    # A spec that matches nothing fails here, before any work; `embeddings:DIR` (priors) streams no images.
    source = open_source(run.data, resolution, run.stage, model_cfg)
    torch.manual_seed(tc.seed)  # the same initial weights on every process
    net = _build(stage, model_cfg, tc.channels_last).to(accelerator.device)  # a non-conv net fails here, before work
    if tc.init_from and not resume:  # checked before the run folder exists, so a bad folder leaves nothing behind
        init_weights(stage, model_cfg, net, Path(tc.init_from))
    if accelerator.is_main_process:
        prepare_run_dir(run, run_dir, resume)
    accelerator.wait_for_everyone()

    step, skipped_local, restored = 0, 0, None
    if resume:
        restored = ckpt.latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if resume and restored is None and tc.init_from:  # a resumed run's checkpoint already holds its weights
        init_weights(stage, model_cfg, net, Path(tc.init_from))
    ema = EMA(net, tc.ema_decay, tc.ema_power)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=tc.lr, betas=tc.adam_betas, eps=tc.adam_eps, weight_decay=tc.weight_decay
    )
    if restored is not None:
        st = restored.state
        load_weights(net, restored.tensors["model"], f"{restored.path} (model)")
        ema.load_state_dict(restored.tensors["ema"], st["ema_updates"])
        optimizer.load_state_dict(ckpt.unflatten_optimizer(restored.tensors.get("optimizer", {}), st["optimizer"]))
        step = int(st["step"])
        skipped_local = int(st["ranks"][rank]["skipped"])

    model_in = torch.compile(net) if tc.compile else net
    model, optimizer = accelerator.prepare(model_in, optimizer)
    if restored is not None and accelerator.scaler is not None and restored.state.get("scaler"):
        accelerator.scaler.load_state_dict(restored.state["scaler"])

    stream = stream_type(source)(
        source, resolution=resolution, local_batch=local_batch, rank=rank, world_size=world, seed=tc.seed,
        start=step * tc.grad_accum, extras=stage.batch_extras(model_cfg),
    )  # fmt: skip
    batches = iter(make_loader(stream, tc.num_workers))
    logger = RunLogger(
        run_dir, enabled=accelerator.is_main_process, total_steps=tc.steps, start_step=step, progress=progress
    )
    attempt.logger = logger
    if restored is not None:
        ckpt.set_rng_state(restored.tensors["rng"], restored.state["ranks"][rank]["rng"], rank)
        logger.message(f"resumed from {restored.path} at step {step}")
    else:
        # Different dropout masks on each process, reproducibly.
        torch.manual_seed(mix_seed(tc.seed, 7, rank))

    def save(at: int) -> None:
        tensors, meta = ckpt.rng_state_tensors(rank)
        per_rank = accelerator_gather_objects(accelerator, {"rng": meta, "skipped": skipped_local, "tensors": tensors})
        if accelerator.is_main_process:
            rng = {k: v for r in per_rank for k, v in r["tensors"].items()}
            opt_tensors, opt_meta = ckpt.flatten_optimizer(optimizer.state_dict())
            state = {
                "step": at,
                "config": run.to_json(),
                "ema_updates": ema.num_updates,
                "optimizer": opt_meta,
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                "data": {"micro_batches_consumed": at * tc.grad_accum, "spec": run.data},
                "ranks": [{"rng": r["rng"], "skipped": r["skipped"]} for r in per_rank],
            }
            tensors_by_group = {"model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt_tensors}
            tensors_by_group["rng"] = rng
            ckpt.save_checkpoint(run_dir / CHECKPOINT_DIR, at, tensors_by_group, state, tc.keep_last)
        accelerator.wait_for_everyone()

    def sample_grid(at: int) -> None:
        if not accelerator.is_main_process or tc.sample_count == 0:
            return
        with torch.random.fork_rng(devices=[]):  # building and sampling must not move the training RNG
            shadow = _build(stage, model_cfg, tc.channels_last).to(accelerator.device)
            ema.copy_to(shadow)
            shadow.eval()
            images = stage.sample(shadow, model_cfg, tc.sample_count, torch.Generator().manual_seed(tc.seed))
        if images is not None:
            logger.save_grid(at, images)

    last_loss, t_start, start_step, interrupted = None, time.perf_counter(), step, False
    nonfinite_steps, ema_decay = 0, 0.0
    window_t, window_samples = time.perf_counter(), 0
    reported: set[str] = set()
    flags = _HostFlags(accelerator.num_processes)
    with _StopFlag() as stop:
        while step < tc.steps:
            over_budget = bool(tc.max_minutes) and time.perf_counter() - t_start >= 60 * tc.max_minutes
            stop_requested, over_budget = flags.any(stop.requested, over_budget)
            if stop_requested:
                interrupted = True
                break
            if over_budget:
                logger.message(f"time budget of {tc.max_minutes:g} min reached at step {step}")
                break
            lr = lr_at(
                step, base_lr=tc.lr, total_steps=tc.steps, warmup_steps=tc.warmup_steps,
                schedule=tc.lr_schedule, min_lr_ratio=tc.min_lr_ratio,
            )  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum, metric_sums = torch.zeros((), device=accelerator.device), {}
            for m in range(tc.grad_accum):
                mb: MicroBatch = next(batches)
                if mb.g != step * tc.grad_accum + m:  # the order is what makes resume exact; never guess
                    raise RuntimeError(f"data loader delivered micro-batch {mb.g}, expected {step * tc.grad_accum + m}")
                skipped_local += mb.skipped
                for problem in mb.problems:
                    if problem not in reported and len(reported) < 20:  # each bad file once, not every epoch
                        reported.add(problem)
                        logger.message(f"skipped a corrupt sample: {problem}")
                batch = Batch(mb.image, mb.caption, mb.scene, mb.index, mb.seed, mb.extra).to(accelerator.device)
                # DDP all-reduces gradients only on the last micro-batch of a step.
                sync = contextlib.nullcontext() if m == tc.grad_accum - 1 else accelerator.no_sync(model)
                with sync:
                    out = stage.loss(model, batch, model_cfg)
                    accelerator.backward(out.loss / tc.grad_accum)
                loss_sum += out.loss.detach() / tc.grad_accum
                for k, v in out.metrics.items():
                    v = v.detach().float() if isinstance(v, torch.Tensor) else v  # summed in float32, no graph
                    metric_sums[k] = metric_sums.get(k, 0.0) + v / tc.grad_accum
            grad_norm = None
            if tc.grad_clip > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            # A NaN or infinite loss on any process (a bad sample, an overflow) must not reach the weights:
            # gradients are all-reduced, so every process sees the same verdict and skips the same update.
            finite = torch.isfinite(accelerator.reduce(loss_sum, "sum"))
            if grad_norm is not None:
                finite = finite & torch.isfinite(torch.as_tensor(grad_norm))
            if bool(finite):
                optimizer.step()
                ema_decay = ema.update(net)
            else:
                nonfinite_steps += 1
                logger.message(f"step {step + 1}: non-finite loss or gradient; update skipped")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            attempt.stepped = True
            window_samples += tc.batch_size
            logger.advance()

            if step % tc.log_every == 0 or step == tc.steps:
                loss_all = accelerator.reduce(loss_sum, "mean")
                skipped_all = accelerator.reduce(torch.tensor(skipped_local, device=accelerator.device), "sum")
                last_loss = float(loss_all)
                now = time.perf_counter()
                metrics = {
                    "loss": last_loss, "lr": lr, "ema_decay": ema_decay, "skipped_samples": int(skipped_all),
                    "nonfinite_steps": nonfinite_steps,
                    "samples_per_s": window_samples / max(now - window_t, 1e-9),
                    **{f"train/{k}": v for k, v in as_floats(metric_sums).items()},
                }  # fmt: skip
                if grad_norm is not None:
                    metrics["grad_norm"] = float(grad_norm)
                logger.log(step, metrics)
                window_t, window_samples = now, 0
            if step % tc.checkpoint_every == 0 and step < tc.steps:
                save(step)
            if tc.sample_every and step % tc.sample_every == 0 and step < tc.steps:
                sample_grid(step)
        save(step)
        if not interrupted:
            sample_grid(step)
    elapsed = time.perf_counter() - t_start
    skipped_total = int(accelerator.reduce(torch.tensor(skipped_local, device=accelerator.device), "sum"))
    if interrupted:
        logger.message(f"stopped at step {step}; checkpoint written, continue with --resume")
    logger.close()
    accelerator.wait_for_everyone()  # no process tears the group down while another still talks to it
    accelerator.end_training()
    return TrainResult(
        run_dir, step, last_loss, skipped_total, (step - start_step) * tc.batch_size / max(elapsed, 1e-9), interrupted,
        accelerator.is_main_process,
    )  # fmt: skip


def init_weights(stage: Stage[Any], model_cfg: Any, net: torch.nn.Module, folder: Path) -> None:
    """Load a model folder's parameters into ``net`` (``train.init_from``). Every parameter's name and shape must
    match, so a folder of another stage or size is refused with what does not fit; float16 folders load into
    float32. Buffers stay as ``build`` made them: they are fixed by the config (noise schedules) or fitted to this
    run's data (a prior's normalization, PCA and buckets), which must win over the folder's when the data or the
    CLIP has changed since."""
    where = f"train.init_from {str(folder)!r}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{where} does not exist (give a model folder from `unclip export`)")
    stage.check_init_from(model_cfg, folder)
    params = {name for name, _ in net.named_parameters()}
    state = {k: v for k, v in net.state_dict().items() if k not in params}
    loaded = stage.init_state(model_cfg, net, read_weights(folder))
    state.update({k: v for k, v in loaded.items() if k not in state})
    load_weights(net, state, f"{where} does not fit stage {stage.name!r} as configured")
    stage.after_init_from(model_cfg, net, loaded)


def _build(stage: Stage[Any], model_cfg: Any, channels_last: bool) -> torch.nn.Module:
    """The stage's network; with ``channels_last``, NHWC weights, and hooks that convert its 4-D inputs (x_t, an
    upsampler's low-resolution condition) where they enter it. Refused for a network without 2-D convolutions."""
    net = stage.build(model_cfg)
    if channels_last:
        try:
            set_channels_last(net)
        except ValueError as err:
            raise ValueError(f"train.channels_last: stage {stage.name!r}: {err}") from err
    return net


class _HostFlags:
    """Host-side flags (stop requested, time budget spent) agreed by every process at every step, so that all stop
    at the same step. They travel in a gloo group of their own: through the training group (NCCL on GPUs) a flag
    would be a device tensor, and reading it back would make the host wait each step for all the GPU work queued
    before it (docs/benchmarks.md, "Host waits in a training step"); through gloo the processes only wait for
    each other's hosts."""

    def __init__(self, world_size: int) -> None:
        self.group = None
        if world_size > 1:
            import torch.distributed as dist

            self.group = dist.new_group(backend="gloo")  # every process calls this at the same point

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true on every process when it is true on any."""
        if self.group is None:
            return flags
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return tuple(bool(v) for v in t.tolist())


def accelerator_gather_objects(accelerator: Any, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process's small state dict, in rank order, on every process (RNG states and counters)."""
    if accelerator.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(out, obj)
    return out
