"""Device selection and mixed precision on one code path.

Callers always wrap compute in :func:`autocast`; when no fast reduced-precision
dtype exists the context is simply disabled (no ``if amp:`` branches anywhere).
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from histo_net.errors import ConfigError

logger = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda|cuda:N`` to a ``torch.device``.

    ``auto`` picks CUDA when available, else CPU. ``ConfigError`` when CUDA is
    requested but absent or the index is out of range, or the name is unknown.
    """
    key = (name or "auto").strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}': CUDA was requested but is not available")
        dev = torch.device(key)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return dev
    raise ConfigError(f"device '{name}': expected auto, cpu, cuda or cuda:N")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for attr in checks:
        fn = getattr(torch.cpu, attr, None)
        try:
            if fn is not None and bool(fn()):
                return True
        except (RuntimeError, AttributeError):  # pragma: no cover - exotic builds
            continue
    return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None when autocast should stay off.

    CUDA: bf16 when supported, else fp16. CPU: bf16 only with native support.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """``torch.autocast`` for ``device``; disabled when ``enabled`` is False or no dtype fits."""
    dtype = amp_dtype(device)
    return torch.autocast(
        device.type,
        dtype=dtype if dtype is not None else torch.bfloat16,  # placeholder when disabled
        enabled=bool(enabled and dtype is not None),
    )


def needs_grad_scaler(device: torch.device, enabled: bool = True) -> bool:
    """True when fp16 autocast is active, the only case a ``GradScaler`` must scale."""
    return bool(enabled) and amp_dtype(device) == torch.float16


def make_grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A ``GradScaler`` that is a no-op unless fp16 autocast is in use."""
    return torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, enabled))


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels.

    ``deterministic=True`` sets ``torch.use_deterministic_algorithms(True, warn_only=True)``,
    disables cuDNN benchmarking and sets ``CUBLAS_WORKSPACE_CONFIG`` (slower, reproducible).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


#: reader workers beside the model on a CPU-only machine with at most this many cores: measured
#: with scripts/benchmark_inference.py (0 vs 1 vs 2 on 2 cores; see README "Throughput")
CPU_SMALL_NODE_CORES = 2
CPU_SMALL_NODE_WORKERS = 1
#: most reader workers on an accelerator node (more only adds memory and start-up time)
GPU_MAX_WORKERS = 8


def available_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def auto_workers(device: torch.device, cores: int | None = None) -> int:
    """Tile-reader worker processes for ``--workers auto``: the one rule.

    Accelerator: ``cores - 1`` (one core feeds the device), capped at :data:`GPU_MAX_WORKERS`.
    CPU: the model's own threads need the cores, so readers take few: on a small node
    (<= :data:`CPU_SMALL_NODE_CORES` cores) the measured best :data:`CPU_SMALL_NODE_WORKERS`,
    else a quarter of the cores (at most 4).
    """
    n = available_cores() if cores is None else max(1, int(cores))
    if device.type != "cpu":
        return max(1, min(GPU_MAX_WORKERS, n - 1))
    if n <= CPU_SMALL_NODE_CORES:
        return min(CPU_SMALL_NODE_WORKERS, n)
    return max(1, min(4, n // 4))


def resolve_workers(workers: int | str | None, device: torch.device, *,
                    default: int | None = None) -> int:
    """A worker setting (an int >= 0, ``"auto"``, or None = ``default``/auto) as an int.

    ``ConfigError`` for anything else (a negative number, an unknown word).
    """
    if workers is None:
        return auto_workers(device) if default is None else int(default)
    if isinstance(workers, str):
        key = workers.strip().lower()
        if key == "auto":
            return auto_workers(device)
        if not key.lstrip("-").isdigit():
            raise ConfigError(f"workers '{workers}': expected a number >= 0 or 'auto'")
        workers = int(key)
    if isinstance(workers, bool) or int(workers) < 0:
        raise ConfigError(f"workers {workers!r}: expected a number >= 0 or 'auto'")
    return int(workers)
