"""Several GPUs: under a launcher, each process takes its share of the work.

``accelerate launch --multi_gpu --num_processes N -m pipeline.cli generate ...`` (or
``torchrun --nproc-per-node N -m pipeline.cli generate ...``) starts N processes
with RANK / WORLD_SIZE / LOCAL_RANK set. Process i then handles items i, i+N,
i+2N, ... on GPU LOCAL_RANK, and the main process gathers every share and writes
the manifest, so the result is the same as a single-process run. Only rows and
barriers travel between processes, over a CPU (gloo) process group, which works
with or without GPUs. Without a launcher nothing here imports torch.distributed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def take(self, items: Sequence[T]) -> list[T]:
        return list(items[self.index :: self.count])

    def barrier(self) -> None:
        if self.count > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, items: list[Any]) -> list[Any]:
        """Every process's ``items``, concatenated in process order."""
        if self.count == 1:
            return items
        import torch.distributed as dist

        shares: list[Any] = [None] * self.count
        dist.all_gather_object(shares, items)
        return [item for share in shares for item in share]


@contextmanager
def launched_shard(enabled: bool = True) -> Iterator[Shard]:
    """This process's place among the launched ones, for the length of a stage.

    On success every process waits for the others (so no process exits before the
    main one has written the manifest); in every case the process group is torn
    down before the interpreter exits, because gloo's threads abort the process
    ("terminate called without an active exception") if they are left running.
    """
    if not enabled or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield Shard()
        return
    import torch.distributed as dist

    shard = _join_launch()
    try:
        yield shard
        shard.barrier()
    finally:
        dist.destroy_process_group()


def _join_launch() -> Shard:
    """Joins the launcher's process group; pins CUDA to this process's local GPU."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")  # small Python objects only: CPU is enough
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % torch.cuda.device_count())  # "cuda" = this GPU
    return Shard(dist.get_rank(), dist.get_world_size())
