"""Batch bookkeeping on disk: per-slide state files, work folders, run files, hash cache.

``DIR/.state/<slide_id>.json`` (atomic) is the source of truth; ``DIR/manifest.jsonl``
and ``DIR/predictions.csv`` are rebuilt from all state files under a file lock, so
concurrent shards combine into one set of run files. See :mod:`histo_net.batch.runner`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histo_net.io_utils import (
    atomic_write_text,
    json_safe,
    safe_child,
    sanitize_slide_id,
    sha256_file,
    temp_file_owner,
)

logger = logging.getLogger(__name__)

STATE_DIR = ".state"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
_WORK_DIR_RE = re.compile(r"^\.(?:tmp|old)-.+-(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]+)$")
#: atomic_path temp files older than this are leftovers of a killed writer
STALE_TEMP_FILE_S = 600.0

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass
class SlideState:
    """One slide's record in ``DIR/.state/<slide_id>.json``.

    ``input_key`` is what must match for a rerun to skip the slide; ``summary`` is the JSON
    form of the stage's typed summary (e.g. :class:`histo_net.predict.summary.SlideSummary`).
    """

    slide_id: str
    path: str
    status: str  # RUNNING | DONE | FAILED
    label: str | None = None
    input_key: dict[str, Any] = field(default_factory=dict)
    input_stat: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    host: str | None = None
    pid: int | None = None
    error_type: str | None = None
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN-free)."""
        return json_safe(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlideState:
        """Inverse of :meth:`to_json`; unknown keys of other versions are ignored."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


#: a stage's extra run files: all states -> {file name in DIR: text}
RunFiles = Callable[[list[SlideState]], dict[str, str]]

# --------------------------------------------------------------------------- hashing

def input_sha256(path: Path, cache: dict | None = None) -> str:
    """sha256 of a slide file; reused from ``cache`` when its size and mtime are unchanged.

    ``cache`` maps resolved path -> ``{"size", "mtime_ns", "sha256"}`` and is updated in
    place (see :func:`load_hash_cache`). Raises ``OSError`` when the file cannot be read.
    """
    path = Path(path)
    stat = path.stat()
    key = str(path.resolve())
    if cache is not None:
        entry = cache.get(key)
        if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return str(entry["sha256"])
    digest = sha256_file(path)
    if cache is not None:
        cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    return digest


def load_hash_cache(out_dir: Path) -> dict:
    """A hash cache for :func:`input_sha256` from the state files of a previous run."""
    cache: dict = {}
    for state in read_states(out_dir):
        stat = state.input_stat
        digest = state.input_key.get("input_sha256")
        if digest and stat.get("path") and "size" in stat and "mtime_ns" in stat:
            cache[stat["path"]] = {"size": stat["size"], "mtime_ns": stat["mtime_ns"], "sha256": digest}
    return cache


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def canonical(value: Any) -> Any:
    """JSON round trip, so keys compare equal however they were built."""
    return json.loads(json.dumps(json_safe(value), sort_keys=True))


def state_path(out_dir: Path, slide_id: str) -> Path:
    """``DIR/.state/<slide_id>.json``."""
    return safe_child(out_dir, STATE_DIR, f"{slide_id}.json")


def _load_state(path: Path) -> SlideState | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SlideState.from_json(data) if isinstance(data, dict) and data.get("slide_id") else None
    except (OSError, ValueError, TypeError):
        return None


def read_state(out_dir: Path, slide_id: str) -> SlideState | None:
    """A slide's state, or None when absent or unreadable."""
    return _load_state(state_path(out_dir, slide_id))


def read_states(out_dir: Path) -> list[SlideState]:
    """All readable state files, sorted by slide id."""
    folder = Path(out_dir) / STATE_DIR
    states = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        state = _load_state(path)
        if state is None:
            logger.warning("%s: unreadable state file, ignored", path)
            continue
        states.append(state)
    return sorted(states, key=lambda s: s.slide_id)


def write_state(out_dir: Path, state: SlideState) -> None:
    """Atomically write a slide's state (JSON, NaN-free)."""
    atomic_write_text(state_path(out_dir, state.slide_id),
                      json.dumps(state.to_json(), indent=1, sort_keys=True, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- work folders

def host_name() -> str:
    """This machine's host name as a safe path component."""
    return sanitize_slide_id(socket.gethostname())


def work_dir(out_dir: Path, prefix: str, slide_id: str) -> Path:
    """``DIR/<prefix><slide_id>-<pid>@<host>``: unique per process, so shards never collide."""
    return safe_child(out_dir, f"{prefix}{slide_id}-{os.getpid()}@{host_name()}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out_dir: Path) -> list[Path]:
    """Remove leftovers of killed runs; returns what was removed.

    Work folders ``.tmp-*`` / ``.old-*`` are removed only when made on this host by a
    process that is no longer alive (other shards may be running) or by this process
    (called before it starts work, so none of its folders is in use; covers pid reuse
    in containers); temp files of interrupted atomic writes only when older than
    ``STALE_TEMP_FILE_S``. Folders from other hosts are left alone.
    """
    out_dir = Path(out_dir)
    removed: list[Path] = []
    host = host_name()
    for entry in out_dir.glob(".*-*"):
        match = _WORK_DIR_RE.match(entry.name)
        if not (match and entry.is_dir()):
            continue
        pid = int(match.group("pid"))
        if match.group("host") == host and (pid == os.getpid() or not pid_alive(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    cutoff = time.time() - STALE_TEMP_FILE_S
    for folder in (out_dir, out_dir / STATE_DIR):
        for entry in folder.glob(".*.tmp") if folder.is_dir() else []:
            owner = temp_file_owner(entry)
            with contextlib.suppress(OSError):
                if owner is not None and owner[0] == host:
                    stale = owner[1] == os.getpid() or not pid_alive(owner[1])
                else:
                    stale = entry.stat().st_mtime < cutoff
                if stale and entry.is_file():
                    entry.unlink()
                    removed.append(entry)
    for path in removed:
        logger.info("removed leftover %s", path)
    return removed


def install_dir(out_dir: Path, tmp_dir: Path, slide_id: str) -> Path:
    """Rename ``tmp_dir`` to ``DIR/<slide_id>``, replacing an existing folder safely.

    The two renames happen under the folder's lock, so two writers (on one host or on a
    shared filesystem) never interleave them: each install sees either the old folder or
    a complete new one, and the last writer's folder wins whole.
    """
    final = safe_child(out_dir, slide_id)
    old = work_dir(out_dir, OLD_PREFIX, slide_id)
    with state_lock(out_dir):
        moved = False
        if final.exists():
            os.replace(final, old)
            moved = True
        os.replace(tmp_dir, final)
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- run files

@contextlib.contextmanager
def state_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``DIR/.state/.lock`` (released when the process dies)."""
    lock_path = Path(out_dir) / STATE_DIR / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def manifest_record(state: SlideState) -> dict[str, Any]:
    """One manifest.jsonl line for a state."""
    return {
        "slide_id": state.slide_id, "path": state.path, "status": state.status,
        "label": state.label, "error_type": state.error_type, "error": state.error,
        "input_sha256": state.input_key.get("input_sha256") or state.summary.get("input_sha256"),
        "bundle_sha256": state.input_key.get("bundle_sha256") or state.summary.get("bundle_sha256"),
        "finished_at": state.finished_at, "seconds": state.seconds,
    }


def rebuild_run_files(out_dir: Path, run_files: RunFiles | None = None) -> None:
    """Rewrite DIR/manifest.jsonl and the stage's run files from every state file (atomically,
    under a lock, so the last shard to finish leaves the complete files)."""
    out_dir = Path(out_dir)
    with state_lock(out_dir):
        states = read_states(out_dir)
        manifest = "".join(json.dumps(json_safe(manifest_record(s))) + "\n" for s in states)
        atomic_write_text(safe_child(out_dir, "manifest.jsonl"), manifest)
        for name, text in (run_files(states) if run_files is not None else {}).items():
            atomic_write_text(safe_child(out_dir, name), text)
