"""torchrun support: process-group set-up from environment variables and small helpers.

Single-process runs need no set-up: every helper answers as rank 0 of 1.
Backend: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_by_torchrun() -> bool:
    """True when torchrun (or a compatible launcher) set RANK and WORLD_SIZE > 1."""
    return "RANK" in os.environ and env_world_size() > 1


def is_initialized() -> bool:
    """True when a default process group exists."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from torchrun env vars; False when not distributed.

    Uses nccl for CUDA devices (and sets the local CUDA device), gloo otherwise.
    Idempotent: an existing group is reused.
    """
    if is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group(
        backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("process group ready: rank %d of %d (%s)", get_rank(), get_world_size(), backend)
    return True


def local_rank() -> int:
    """``LOCAL_RANK`` (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def get_rank() -> int:
    """Global rank (0 when not distributed)."""
    return torch.distributed.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for all ranks; a no-op when not distributed."""
    if is_initialized():
        torch.distributed.barrier()


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if is_initialized():
        torch.distributed.destroy_process_group()


def shard_list(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items ``rank, rank + world, ...``: disjoint shards whose union is ``items``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    return list(items[rank::world_size])


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (identity when not distributed)."""
    if not is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a float over ranks (identity when not distributed)."""
    if not is_initialized():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device=device if device.type == "cuda" else torch.device("cpu"))
    torch.distributed.all_reduce(t)
    return float(t.item()) / get_world_size()
