"""Checkpoint files: atomic save, weights-only load with one-line errors."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_net.errors import ModelBundleError
from histo_net.io_utils import atomic_path

_PLAIN_SCALARS = (str, int, float, bool, type(None), torch.dtype, torch.device)


def check_plain(obj: Any, where: str = "state") -> None:
    """``ModelBundleError`` when ``obj`` holds anything a weights-only load would refuse.

    Allowed: tensors, str/int/float/bool/None, dtypes, devices, and dict/list/tuple of those.
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN_SCALARS:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) not in _PLAIN_SCALARS:
                raise ModelBundleError(
                    f"{where}: key {key!r} of type {type(key).__name__} is not plain data"
                )
            check_plain(value, f"{where}.{key}")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise ModelBundleError(
        f"{where}: {type(obj).__name__} is not plain data (use tensors, numbers, str, list, dict)"
    )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` plain ``state`` (tensors, scalars, str, lists, dicts) to ``path`` atomically.

    ``ModelBundleError`` (nothing written) when ``state`` holds other objects, since
    :func:`load_checkpoint` would refuse them.
    """
    check_plain(state, str(path))
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)``; ``ModelBundleError`` if missing, corrupt or pickled."""
    path = Path(path)
    if not path.is_file():
        raise ModelBundleError(f"{path}: file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower() or "reduce" in str(exc).lower():
            raise ModelBundleError(
                f"{path}: refusing to load pickled objects (only tensors and plain data allowed)"
            ) from None
        raise ModelBundleError(f"{path}: corrupt or not a torch file (unpickling failed)") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many types (KeyError, EOFError, ...)
        raise ModelBundleError(
            f"{path}: corrupt or not a torch file ({_first_line(exc)})"
        ) from None
    if not isinstance(state, dict):
        raise ModelBundleError(f"{path}: expected a dict, found {type(state).__name__}")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def capture_rng_state() -> dict[str, Any]:
    """Torch (CPU + CUDA), numpy and python RNG states as weights-only-safe values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *[float(x) if isinstance(x, float) else int(x) for x in np_state[2:]],
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when CUDA is available)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
