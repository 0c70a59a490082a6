"""Small I/O helpers: atomic writes, safe output paths, hashing.

Output paths are never built from slide metadata; slide ids are sanitised file
stems and every output path is checked to stay inside its output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from histo_net.errors import ConfigError

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_TEMP_OWNER = re.compile(r"~(?P<host>[^~/]+)~(?P<pid>\d+)~[^~/]*\.tmp$")


def sanitize_slide_id(name: str) -> str:
    """Turn a file stem (or manifest id) into a safe single path component.

    Keeps ``[A-Za-z0-9._-]``, replaces other runs with ``_``, strips leading dots
    so ``..`` or ``.hidden`` can never escape or hide. Never returns "".
    """
    cleaned = _UNSAFE_CHARS.sub("_", name).strip("._") or "slide"
    return cleaned[:200]


def safe_child(parent: Path, *parts: str) -> Path:
    """``parent / parts`` resolved, raising ``ConfigError`` if it escapes ``parent``."""
    root = Path(parent).resolve()
    child = root.joinpath(*parts).resolve()
    if child != root and root not in child.parents:
        raise ConfigError(f"{child}: output path escapes the output folder {root}")
    return child


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On error the temporary file is removed, so a killed or failed write never
    leaves a partial file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = f"~{sanitize_slide_id(socket.gethostname())}~{os.getpid()}~"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{owner}", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give outputs the usual umask permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def temp_file_owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) that created an :func:`atomic_path` temp file, or None for other names."""
    match = _TEMP_OWNER.search(Path(path).name)
    return (match.group("host"), int(match.group("pid"))) if match else None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def h5_attr_value(value: object) -> object:
    """An h5py attribute as a plain Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_safe(value: Any) -> Any:
    """Recursively convert to plain JSON types: numpy -> python, NaN/inf -> None, Path -> str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)
