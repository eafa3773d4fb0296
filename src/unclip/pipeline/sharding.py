"""A prompt-file run split over processes started by ``torchrun`` (one per GPU), each making its share of images.

Images do not depend on which process makes them or on what else is in its batch (each has its own seed), so the
split changes nothing in the folder. The processes only need to agree on when to start and stop, which a gloo
process group does on any machine (no tensors cross it, so NCCL is not needed even on GPUs). The main process
claims the folder, writes what is shared and draws the contact sheet; a refusal there (another run's folder) is
raised on every process, so none waits for the others forever.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Process ``rank`` of ``world_size``; the default is a run on its own."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size} process(es)")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This process's share: every ``world_size``-th item from its rank, so shares differ by one at most."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def main_first(self, work: Callable[[], Any]) -> None:
        """Run ``work`` on the main process while the others wait; its ValueError or FileNotFoundError is raised on
        every process."""
        failure: ValueError | FileNotFoundError | None = None
        if self.is_main:
            try:
                work()
            except (ValueError, FileNotFoundError) as err:
                failure = err
        if self.world_size > 1:
            import torch.distributed as dist

            box = [None if failure is None else str(failure)]
            dist.broadcast_object_list(box, src=0)
            if box[0] is not None and not self.is_main:
                raise ValueError(f"the main process refused: {box[0]}")
        if failure is not None:
            raise failure


def world_from_environment() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as torchrun sets them; ``(0, 1, 0)`` outside it."""
    try:
        return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({err})") from err


def process_device(device: str, local_rank: int) -> str:
    """A bare ``cuda`` means this process's own GPU (``cuda:LOCAL_RANK``) in a multi-process run."""
    return f"cuda:{local_rank}" if device == "cuda" else device


@contextlib.contextmanager
def process_shard() -> Iterator[Shard]:
    """This process's :class:`Shard`; under torchrun a gloo process group joins the processes for the run's length."""
    rank, world, _ = world_from_environment()
    if world == 1:
        yield Shard()
        return
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo")
    try:
        yield Shard(rank, world)
    finally:
        if started:
            dist.destroy_process_group()
