"""Many slides: per-slide state files, resume, failure isolation, sharding, run summaries.

Layout of an output folder ``DIR``::

    DIR/.state/<slide_id>.json   one atomic state file per slide (source of truth)
    DIR/<slide_id>/              finished outputs, renamed in from DIR/.tmp-<slide_id>-<pid>@<host>/
    DIR/manifest.jsonl           final state of every slide    } rebuilt from .state/ after every
    DIR/predictions.csv          one row per slide             } run, so shards combine into one

A slide's state is written "running" before work starts and "done" only after its
folder has been renamed into place, so a killed run is never counted as done.
Concurrent shards touch disjoint slides; the run files are rebuilt under a file lock.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from histo_net.batch.state import (  # noqa: F401 - re-exported for callers
    STATE_DIR,
    TMP_PREFIX,
    canonical,
    clean_stale,
    host_name,
    input_sha256,
    install_dir,
    load_hash_cache,
    now_iso,
    read_state,
    read_states,
    rebuild_run_files,
    work_dir,
    write_state,
)
from histo_net.errors import ConfigError, HistoNetError
from histo_net.io_utils import safe_child, sanitize_slide_id
from histo_net.report.write import json_safe

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ERROR_CHARS = 500


# --------------------------------------------------------------------------- sharding

def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``ConfigError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ConfigError(f"--shard {text!r}: need N >= 1 and 0 <= I < N")
    return index, count


def shard_from_env(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
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


def select_shard(items: Sequence[T], index: int, count: int, key: Callable[[T], str]) -> list[T]:
    """Items of shard ``index`` of ``count``: sorted by ``key``, every ``count``-th from ``index``.

    Independent of input order; the shards are disjoint and their union is ``items``.
    """
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need count >= 1 and 0 <= index < count")
    ordered = sorted(items, key=key)
    return [item for i, item in enumerate(ordered) if i % count == index]


# --------------------------------------------------------------------------- state files

@dataclass
class SlideTask:
    """One slide to process; ``input_key`` is what must match for a resume to skip it
    (e.g. input_sha256, bundle_sha256, a settings hash); it must be JSON-serialisable."""

    slide_id: str
    path: Path
    label: str | None = None
    input_key: dict = field(default_factory=dict)


@dataclass
class BatchSummary:
    """Slide ids done, skipped (already done) and failed ``(slide_id, error_type, message)``."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)

    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.failed else 0


def is_done(out_dir: Path, task: SlideTask) -> bool:
    """True when ``task`` finished before with the same ``input_key`` and its report exists."""
    state = read_state(out_dir, task.slide_id)
    if not state or state.get("status") != "done":
        return False
    if canonical(state.get("input_key") or {}) != canonical(task.input_key):
        return False
    return safe_child(out_dir, task.slide_id, "report.json").is_file()


# --------------------------------------------------------------------------- errors

def one_line_error(exc: BaseException, path: Path) -> tuple[str, str]:
    """``(error_type, message)``: ``HistoNetError.kind`` or the class name; one line naming the file."""
    error_type = exc.kind if isinstance(exc, HistoNetError) else type(exc).__name__
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, HistoNetError):
        text = f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text
    if str(path) not in text and Path(path).name not in text:
        text = f"{path}: {text}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS - 3] + "..."
    return error_type, text


# --------------------------------------------------------------------------- run

def _input_stat(path: Path) -> dict:
    try:
        stat = Path(path).stat()
    except OSError:
        return {}
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _check_tasks(tasks: Sequence[SlideTask]) -> None:
    seen: dict[str, Path] = {}
    for task in tasks:
        if sanitize_slide_id(task.slide_id) != task.slide_id:
            raise ConfigError(f"{task.path}: slide id {task.slide_id!r} is not a safe file name "
                              "(use io_utils.sanitize_slide_id)")
        if task.slide_id in seen:
            raise ConfigError(f"{task.path}: slide id '{task.slide_id}' also used by {seen[task.slide_id]}")
        seen[task.slide_id] = task.path


def _run_one(task: SlideTask, process: Callable[[SlideTask, Path], dict], out_dir: Path) -> dict:
    """Process one slide in a fresh temp folder; returns its final state (done or failed)."""
    started = time.monotonic()
    base = {"slide_id": task.slide_id, "path": str(task.path), "label": task.label,
            "input_key": canonical(task.input_key), "input_stat": _input_stat(task.path),
            "started_at": now_iso(), "host": host_name(), "pid": os.getpid()}
    write_state(out_dir, {**base, "status": "running"})
    tmp_dir = work_dir(out_dir, TMP_PREFIX, task.slide_id)
    try:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        summary = process(task, tmp_dir)
        summary = json_safe(dict(summary or {}))
        install_dir(out_dir, tmp_dir, task.slide_id)
        state = {**base, "status": "done", "summary": summary, "error_type": None, "error": None}
    except Exception as exc:
        error_type, message = one_line_error(exc, task.path)
        logger.debug("slide %s failed", task.slide_id, exc_info=True)
        state = {**base, "status": "failed", "summary": {}, "error_type": error_type, "error": message}
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    state.update(finished_at=now_iso(), seconds=round(time.monotonic() - started, 3))
    write_state(out_dir, state)
    return state


def run_batch(tasks: Sequence[SlideTask], process: Callable[[SlideTask, Path], dict], *,
              out_dir: Path, overwrite: bool = False, progress: bool = True,
              class_names: Sequence[str] | None = None) -> BatchSummary:
    """Process every task, isolating failures; resumable and safe for concurrent shards.

    A task is skipped when already done with an identical ``input_key`` and its
    ``report.json`` exists (unless ``overwrite``). Otherwise ``process(task, tmp_dir)``
    writes the slide's outputs into a fresh temp folder and returns summary fields
    (predicted_class, probabilities, indeterminate, tile_count, ...); the folder is then
    renamed to ``DIR/<slide_id>`` and the state marked done. An exception marks the slide
    failed (one stderr line) and the batch goes on. The run files are rebuilt at the end.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    _check_tasks(tasks)
    (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    summary = BatchSummary()
    bar = tqdm(total=len(tasks), desc="slides", unit="slide", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    try:
        for task in tasks:
            bar.set_postfix_str(task.slide_id[:40], refresh=False)
            if not overwrite and is_done(out_dir, task):
                summary.skipped.append(task.slide_id)
            else:
                state = _run_one(task, process, out_dir)
                if state["status"] == "done":
                    summary.done.append(task.slide_id)
                else:
                    summary.failed.append((task.slide_id, state["error_type"], state["error"]))
                    line = f"histo-net: {task.slide_id}: failed [{state['error_type']}] {state['error']}"
                    if progress:
                        tqdm.write(line, file=sys.stderr)
                    else:
                        print(line, file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
        rebuild_run_files(out_dir, class_names)
    logger.info("batch: %d done, %d skipped, %d failed", len(summary.done), len(summary.skipped),
                len(summary.failed))
    return summary
