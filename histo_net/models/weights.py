"""Encoder weights from a local file only: read, unwrap, strict-load, sha256.

* ``.safetensors`` via ``safetensors.torch.load_file``; ``.bin``/``.pth``/``.pt``
  via :func:`histo_net.models.checkpoint.load_checkpoint` (``weights_only=True``,
  so a pickle with code in it is refused with a one-line ``ModelBundleError``).
* Common wrappers are unwrapped: ``{"state_dict": ...}``, ``{"model": ...}`` and
  the ``module.`` (DDP) / ``_orig_mod.`` (torch.compile) key prefixes.
* Keys must match the module exactly; a mismatch is one line naming the first
  few missing / unexpected / wrong-shape keys and their counts.
* Nothing is downloaded: this module only reads the path it is given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from histo_net.errors import ModelBundleError
from histo_net.models.checkpoint import load_checkpoint

SAFETENSORS_SUFFIXES: tuple[str, ...] = (".safetensors",)
TORCH_SUFFIXES: tuple[str, ...] = (".bin", ".pth", ".pt")
_WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model")
_KEY_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
_SHOW = 5  # keys named per kind in a mismatch message


@dataclass(frozen=True)
class WeightsFile:
    """Provenance of a weights file: where it is, its sha256 and size."""

    path: Path
    sha256: str  # hex digest of the file bytes
    size_bytes: int


def file_sha256(path: Path, chunk_bytes: int = 1 << 24) -> str:
    """Hex sha256 of the file at ``path`` (streamed, 16 MiB chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(state: dict[str, Tensor]) -> str:
    """Hex sha256 over sorted keys, dtypes, shapes and bytes of a state dict (in memory)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def unwrap_state_dict(obj: dict[str, Any], path: Path) -> dict[str, Tensor]:
    """Peel ``state_dict``/``model`` wrappers and ``module.``-style prefixes off ``obj``.

    ``ModelBundleError`` when what remains is not a non-empty dict of tensors.
    """
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        bad = next((k for k, v in obj.items() if not isinstance(v, Tensor)), None)
        raise ModelBundleError(
            f"{path}: not a state dict of tensors"
            + (f" (key {bad!r} holds {type(obj[bad]).__name__})" if bad is not None else " (empty)")
        )
    state: dict[str, Tensor] = {str(k): v for k, v in obj.items()}
    for prefix in _KEY_PREFIXES:  # only when every key carries it (a wrapper, not a name)
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def read_state_dict(path: Path | str, expected_sha256: str | None = None
                    ) -> tuple[dict[str, Tensor], WeightsFile]:
    """``(state dict on CPU, provenance)`` of a local weights file; ``ModelBundleError`` else.

    The file is hashed first; with ``expected_sha256`` (e.g. recorded in a bundle) a
    different file is refused before anything is loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelBundleError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise ModelBundleError(
            f"{path}: unsupported weights file type '{suffix}' "
            f"(use {', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)})"
        )
    sha256 = file_sha256(path)
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ModelBundleError(
            f"{path}: sha256 {sha256[:16]}... differs from the expected {expected_sha256[:16]}... "
            f"(not the weights file this model was trained with)"
        )
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: dict[str, Any] = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelBundleError(f"{path}: corrupt or not a safetensors file ({first})") from None
    else:
        raw = load_checkpoint(path)  # weights_only=True; refuses pickled code
    state = unwrap_state_dict(raw, path)
    return state, WeightsFile(path=path, sha256=sha256, size_bytes=path.stat().st_size)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (", ..." if len(keys) > _SHOW else "")


def check_keys(module: nn.Module, state: dict[str, Tensor], *, path: Path, what: str) -> None:
    """``ModelBundleError`` (one line) unless ``state`` has exactly ``module``'s keys and shapes."""
    expected = module.state_dict(keep_vars=True)
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    wrong_shape = sorted(
        k for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if not (missing or unexpected or wrong_shape):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if wrong_shape:
        first = wrong_shape[0]
        parts.append(
            f"{len(wrong_shape)} wrong shape ({first}: file {tuple(state[first].shape)} vs "
            f"model {tuple(expected[first].shape)})"
        )
    raise ModelBundleError(f"{path}: weights do not fit {what}: " + "; ".join(parts))


def load_state_strict(module: nn.Module, state: dict[str, Tensor], *, path: Path, what: str,
                      assign: bool = False) -> None:
    """:func:`check_keys`, then ``load_state_dict(strict=True)``.

    ``assign=True`` makes the module's tensors *be* the file's (no copy; use it
    for a module built on the meta device); the caller casts dtypes afterwards.
    """
    check_keys(module, state, path=path, what=what)
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:  # pragma: no cover - check_keys catches the known cases
        raise ModelBundleError(
            f"{path}: weights do not fit {what} ({str(exc).strip().splitlines()[0]})"
        ) from None
