"""Ranks and shards: torchrun process groups, the one shard rule, small collectives.

Single-process runs need no set-up: every helper answers as rank 0 of 1.
Backend: gloo on CPU, nccl on CUDA. Work is split by :func:`select_shard` everywhere
(training stages, ``--shard I/N``, torchrun ranks, SLURM array tasks), so a slide always
lands in the same shard whatever the input order.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch

from histo_net.device import select_device
from histo_net.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")


# --------------------------------------------------------------------------- environment

def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_by_torchrun() -> bool:
    """True when torchrun (or a compatible launcher) set RANK and WORLD_SIZE > 1."""
    return "RANK" in os.environ and env_world_size() > 1


def local_rank() -> int:
    """``LOCAL_RANK`` (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def env_rank() -> int:
    """``RANK`` from the environment (0 when unset), without a process group."""
    return int(os.environ.get("RANK", "0") or 0)


# --------------------------------------------------------------------------- process group

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


def _collective_device(device: torch.device) -> torch.device:
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def sum_across_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity when not distributed)."""
    if not is_initialized():
        return [float(v) for v in values]
    total = torch.tensor(list(values), dtype=torch.float64, device=_collective_device(device))
    torch.distributed.all_reduce(total)
    return [float(v) for v in total.cpu()]


def broadcast_flag(flag: bool, device: torch.device, src: int = 0) -> bool:
    """Rank ``src``'s boolean on every rank (identity when not distributed)."""
    if not is_initialized():
        return bool(flag)
    box = torch.tensor([1 if flag else 0], device=_collective_device(device))
    torch.distributed.broadcast(box, src=src)
    return bool(box.item())


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (identity when not distributed)."""
    if not is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


# --------------------------------------------------------------------------- shards

def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``ConfigError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ConfigError(f"--shard {text!r}: need N >= 1 and 0 <= I < N")
    return index, count


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` under torchrun (WORLD_SIZE > 1), else None."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
    except ValueError:
        raise ConfigError("RANK/WORLD_SIZE: not integers") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank}: outside WORLD_SIZE={world}")
    return rank, world


def resolve_shard(shard: str | None) -> tuple[int, int]:
    """``--shard I/N`` when given, else the torchrun rank, else ``(0, 1)`` (everything)."""
    if shard is not None:
        return parse_shard(shard)
    return shard_from_env() or (0, 1)


def select_shard(items: Sequence[T], index: int, count: int, key: Callable[[T], str]) -> list[T]:
    """Items of shard ``index`` of ``count``: sorted by ``key``, every ``count``-th from ``index``.

    The one shard rule of the package. Independent of input order; shards are disjoint and
    their union is ``items``.
    """
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need count >= 1 and 0 <= index < count")
    ordered = sorted(items, key=key)
    return [item for i, item in enumerate(ordered) if i % count == index]


def device_for_rank(device_name: str) -> torch.device:
    """The device for this process: ``cuda:LOCAL_RANK`` under torchrun with CUDA, else as named."""
    rank = os.environ.get("LOCAL_RANK")
    if rank is not None and device_name in ("auto", "cuda") and torch.cuda.is_available():
        return select_device(f"cuda:{int(rank) % torch.cuda.device_count()}")
    return select_device(device_name)
