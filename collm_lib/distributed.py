"""Running under torchrun: DDP set-up in one place.

`settings.distributed()` reads what torchrun puts in the environment (RANK, WORLD_SIZE, LOCAL_RANK); this module
joins the process group it describes and holds what the ranks do together: which process is which, one decision
taken on rank 0 and shared, and "rank 0 makes it, the others wait, then all find it". In a single process
(no torchrun) each function is what that process alone would do.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from . import settings

T = TypeVar("T")


def init_distributed() -> torch.device:
    """Join the process group torchrun / accelerate set up (nccl on GPU, gloo on CPU); pick the device."""
    rank, world, local = settings.distributed()
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def process_device(explicit: str | None = None) -> torch.device:
    """This process's device: under torchrun its rank's (the group joined), else settings.device(explicit)."""
    return init_distributed() if settings.distributed()[1] > 1 else settings.device(explicit)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the joined process group; (0, 1) outside one."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main() -> bool:
    """Whether this process writes shared files: rank 0 of the joined group; before joining one (a torchrun job's
    log files, printing), rank 0 as torchrun set it; the only process otherwise."""
    return dist.get_rank() == 0 if dist.is_initialized() else settings.distributed()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for outside a process group)."""
    if dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank: one decision (stop training?) all ranks act on together."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def rank0_first(make: Callable[[], T]) -> T:
    """`make()` on rank 0 while the other ranks wait, then on every rank, which finds what rank 0 made (`make`
    returns an existing result as it is). Ranks making one folder at once would race on its files."""
    if settings.distributed()[1] > 1:
        init_distributed()
        if is_main():
            make()
        dist.barrier()
    return make()
