"""Several processes (torchrun, accelerate launch): rank 0 prepares data and writes every file, all
ranks train together (DDP through the Trainer), rank 0 tests. One process: every call is a no-op."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(hours=6)  # rank 0 alone tests and measures between models while the others wait


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group the launcher set up (gloo on CPU, NCCL on GPU); the Trainer reuses it."""
    if world_size() > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def share(value=None):
    """`value` as rank 0 has it, on every rank (any picklable object: splits, decisions, teacher outputs)."""
    if not dist.is_initialized():
        return value
    box = [value if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def global_mean(total: float, count: int) -> float:
    """The mean of a quantity summed over every rank's share (e.g. the training loss of one epoch)."""
    if dist.is_initialized():
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        both = torch.tensor([total, count], dtype=torch.float64, device=device)
        dist.all_reduce(both)
        total, count = both.tolist()
    return total / max(count, 1)
