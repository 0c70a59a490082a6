"""Slide claims: several processes on one output folder share the work, each slide once.

``DIR/.state/<slide_id>.claim`` is created atomically (``O_CREAT | O_EXCL``) before a
slide is worked on and removed after its final state is written. It holds JSON
``{"host", "pid", "started_at", "started_unix"}``; its mtime is refreshed by a heartbeat
while the slide runs. A claim is stale, and taken over, when its writer is dead: on this
host its pid no longer exists; on another host its heartbeat is older than
:data:`CLAIM_STALE_S`. Take-overs happen under the folder's lock, so of two processes that
both find a claim stale only one ends up holding the slide.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from histo_net.batch.state import STATE_DIR, host_name, now_iso, pid_alive, state_lock
from histo_net.io_utils import safe_child

#: another host's claim whose heartbeat is older than this (s) belongs to a dead writer
CLAIM_STALE_S = 600.0
#: how often (s) a held claim's mtime is refreshed
HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim (as read from its file)."""

    host: str
    pid: int
    started_at: str

    def describe(self) -> str:
        """``pid 123 on host-a since 2024-...``."""
        return f"pid {self.pid} on {self.host} since {self.started_at}"


def claim_path(out_dir: Path, slide_id: str) -> Path:
    """``DIR/.state/<slide_id>.claim``."""
    return safe_child(out_dir, STATE_DIR, f"{slide_id}.claim")


def read_claim(path: Path) -> ClaimOwner | None:
    """The owner recorded in a claim file; None when absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return ClaimOwner(str(data["host"]), int(data["pid"]), str(data.get("started_at", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_stale(path: Path, owner: ClaimOwner | None) -> bool:
    try:
        age_s = time.time() - path.stat().st_mtime
    except OSError:
        return False  # vanished: not ours to take over, retry creating it
    if owner is None:  # unreadable (a writer killed mid-write, or being written right now)
        return age_s > 5.0
    if owner.host == host_name():
        return owner.pid == os.getpid() or not pid_alive(owner.pid)
    return age_s > CLAIM_STALE_S


def _create(path: Path) -> bool:
    """Create the claim file exclusively; False when it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    body = {"host": host_name(), "pid": os.getpid(), "started_at": now_iso(),
            "started_unix": time.time()}
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(body, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def try_claim(out_dir: Path, slide_id: str) -> ClaimOwner | None:
    """Claim ``slide_id``; None when this process now holds it, else the live owner."""
    path = claim_path(out_dir, slide_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _create(path):
        return None
    with state_lock(out_dir):  # take-overs are serialised: a fresh claim is never removed
        owner = read_claim(path)
        if path.exists() and not _is_stale(path, owner):
            return owner or ClaimOwner("?", -1, "")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if _create(path):
            return None
    return read_claim(path) or ClaimOwner("?", -1, "")


def release_claim(out_dir: Path, slide_id: str) -> None:
    """Remove this process's claim on ``slide_id`` (a claim of someone else is left alone)."""
    path = claim_path(out_dir, slide_id)
    owner = read_claim(path)
    if owner is not None and owner.host == host_name() and owner.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Heartbeat:
    """Refreshes a held claim's mtime every :data:`HEARTBEAT_S` from a daemon thread."""

    def __init__(self, path: Path, every_s: float = HEARTBEAT_S) -> None:
        self._path = path
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="histo-net-claim", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._every_s):
            with contextlib.suppress(OSError):
                os.utime(self._path)

    def __enter__(self) -> Heartbeat:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1.0)
