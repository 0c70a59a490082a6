"""Many slides: per-slide state files, resume, failure isolation, run summaries.

Layout of an output folder ``DIR``::

    DIR/.state/<slide_id>.json   one atomic state file per slide (source of truth)
    DIR/<slide_id>/              finished outputs, renamed in from DIR/.tmp-<slide_id>-<pid>@<host>/
    DIR/manifest.jsonl           final state of every slide    } rebuilt from .state/ after every
    DIR/<stage run files>        e.g. predictions.csv          } run, so shards combine into one

A slide is claimed (``DIR/.state/<slide_id>.claim``, see :mod:`histo_net.batch.claims`)
before work starts, so several processes on one folder, sharded or not, share the slides
and compute each once; its state is written "running" before work starts and "done" only
after its outputs are in place, so a killed run is never counted as done. The run files are
rebuilt under a file lock. Used by ``predict`` and ``tile``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from histo_net.batch.claims import Heartbeat, claim_path, release_claim, try_claim
from histo_net.batch.state import (
    DONE,
    FAILED,
    RUNNING,
    STATE_DIR,
    TMP_PREFIX,
    RunFiles,
    SlideState,
    canonical,
    clean_stale,
    host_name,
    install_dir,
    now_iso,
    read_state,
    rebuild_run_files,
    work_dir,
    write_state,
)
from histo_net.errors import ConfigError, HistoNetError
from histo_net.io_utils import json_safe, safe_child, sanitize_slide_id

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500


class Summary(Protocol):
    """What a stage's per-slide function returns: a typed record with a JSON form."""

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict stored in the slide's state file."""
        ...


@dataclass
class SlideTask:
    """One slide to process; ``input_key`` is what must match for a resume to skip it
    (e.g. input sha256, bundle sha256, a settings hash); it must be JSON-serialisable."""

    slide_id: str
    path: Path
    label: str | None = None
    input_key: dict = field(default_factory=dict)


@dataclass
class BatchSummary:
    """Slide ids done, skipped (already done, also by another process), failed
    ``(slide_id, error_type, message)`` and ``elsewhere`` ``(slide_id, owner)``: still being
    worked on by another live process when this one finished."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    elsewhere: list[tuple[str, str]] = field(default_factory=list)

    def touched(self) -> set[str]:
        """Every slide id this run reported on."""
        return (set(self.done) | set(self.skipped) | {f[0] for f in self.failed}
                | {e[0] for e in self.elsewhere})

    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.failed else 0


@dataclass(frozen=True)
class OutputLayout:
    """Where a stage's finished outputs live and which file proves a slide is done.

    ``install=True``: the stage writes into a fresh work folder that is renamed to
    ``DIR/<slide_id>`` (``done_file`` relative to it). ``install=False``: the stage writes
    its files atomically itself; ``done_file`` is relative to ``DIR`` and may contain
    ``{slide_id}``.
    """

    done_file: str = "report.json"
    install: bool = True

    def done_path(self, out_dir: Path, slide_id: str) -> Path:
        """The file whose presence (with a done state) means ``slide_id`` is finished."""
        if self.install:
            return safe_child(out_dir, slide_id, self.done_file)
        return safe_child(out_dir, self.done_file.format(slide_id=slide_id))


def is_done(out_dir: Path, task: SlideTask, layout: OutputLayout = OutputLayout()) -> bool:
    """True when ``task`` finished before with the same ``input_key`` and its output exists."""
    state = read_state(out_dir, task.slide_id)
    if state is None or state.status != DONE:
        return False
    if canonical(state.input_key) != canonical(task.input_key):
        return False
    return layout.done_path(out_dir, task.slide_id).is_file()


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


Process = Callable[[SlideTask, Path], Summary]


def _run_one(task: SlideTask, process: Process, out_dir: Path, layout: OutputLayout) -> SlideState:
    """Process one slide (in a fresh work folder when installing); returns its final state."""
    started = time.monotonic()
    state = SlideState(slide_id=task.slide_id, path=str(task.path), status=RUNNING, label=task.label,
                       input_key=canonical(task.input_key), input_stat=_input_stat(task.path),
                       started_at=now_iso(), host=host_name(), pid=os.getpid())
    write_state(out_dir, state)
    tmp_dir = work_dir(out_dir, TMP_PREFIX, task.slide_id)
    try:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        summary = process(task, tmp_dir)
        state.summary = json_safe(summary.to_json())
        if layout.install:
            install_dir(out_dir, tmp_dir, task.slide_id)
        state.status = DONE
    except Exception as exc:
        state.error_type, state.error = one_line_error(exc, task.path)
        logger.debug("slide %s failed", task.slide_id, exc_info=True)
        state.status, state.summary = FAILED, {}
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    state.finished_at, state.seconds = now_iso(), round(time.monotonic() - started, 3)
    write_state(out_dir, state)
    return state


def failure_line(command: str, slide_id: str, error_type: str, message: str) -> str:
    """The one failure-line format of every batch command."""
    return f"histo-net {command}: {slide_id}: failed [{error_type}] {message}"


def _done_meanwhile(out_dir: Path, task: SlideTask, layout: OutputLayout, overwrite: bool,
                    run_started: str) -> bool:
    """After claiming: whether another process finished ``task`` (during this run, with
    ``overwrite``) so it must not be computed again."""
    if not overwrite:
        return is_done(out_dir, task, layout)
    state = read_state(out_dir, task.slide_id)
    return bool(state is not None and state.status == DONE and (state.started_at or "") >= run_started
                and state.pid != os.getpid() and layout.done_path(out_dir, task.slide_id).is_file())


class _Batch:
    """One run_batch call: claims, processing and the summary."""

    def __init__(self, process: Process, out_dir: Path, overwrite: bool, progress: bool,
                 layout: OutputLayout, command: str) -> None:
        self.process, self.out_dir, self.overwrite = process, out_dir, overwrite
        self.progress, self.layout, self.command = progress, layout, command
        self.summary = BatchSummary()
        self.run_started = now_iso()

    def attempt(self, task: SlideTask) -> str | None:
        """Process ``task`` unless done or claimed; None when settled, else the claim owner."""
        if not self.overwrite and is_done(self.out_dir, task, self.layout):
            self.summary.skipped.append(task.slide_id)
            return None
        owner = try_claim(self.out_dir, task.slide_id)
        if owner is not None:
            return owner.describe()
        try:
            with Heartbeat(claim_path(self.out_dir, task.slide_id)):
                if _done_meanwhile(self.out_dir, task, self.layout, self.overwrite, self.run_started):
                    self.summary.skipped.append(task.slide_id)
                    return None
                state = _run_one(task, self.process, self.out_dir, self.layout)
        finally:
            release_claim(self.out_dir, task.slide_id)
        if state.status == DONE:
            self.summary.done.append(task.slide_id)
        else:
            failed = (task.slide_id, str(state.error_type), str(state.error))
            self.summary.failed.append(failed)
            self.report(failure_line(self.command, *failed))
        return None

    def report(self, line: str) -> None:
        """One stderr line that does not break the progress bar."""
        if self.progress:
            from tqdm import tqdm  # deferred: keeps importing the runner cheap

            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)


def _advance(bar: Any) -> None:
    """One slide further; the last step is drawn only by ``close()``, so the final bar is
    printed once (consoles that do not honour carriage returns showed it twice)."""
    if bar.total is not None and bar.n + 1 >= bar.total:
        bar.n = bar.total
    else:
        bar.update(1)


def run_batch(tasks: Sequence[SlideTask], process: Process, *, out_dir: Path,
              overwrite: bool = False, progress: bool = True, run_files: RunFiles | None = None,
              layout: OutputLayout = OutputLayout(), command: str = "predict") -> BatchSummary:
    """Process every task, isolating failures; resumable and safe for concurrent processes.

    A task is skipped when already done with an identical ``input_key`` and its done file
    exists (unless ``overwrite``). Otherwise it is claimed (a slide another live process
    holds is left to it and revisited at the end) and ``process(task, work_dir)`` produces
    the slide's outputs and returns a :class:`Summary`; an exception marks the slide failed
    (one stderr line) and the batch goes on. ``manifest.jsonl`` and ``run_files`` are
    rebuilt at the end.
    """
    from tqdm import tqdm  # deferred: keeps importing the runner cheap

    out_dir = Path(out_dir)
    _check_tasks(tasks)
    (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    batch = _Batch(process, out_dir, overwrite, progress, layout, command)
    bar = tqdm(total=len(tasks), desc="slides", unit="slide", file=sys.stderr, dynamic_ncols=True,
               disable=None if progress else True)  # None: no bar when stderr is not a terminal
    deferred: list[SlideTask] = []
    try:
        for task in tasks:
            bar.set_postfix_str(task.slide_id[:40], refresh=False)
            if batch.attempt(task) is None:
                _advance(bar)
            else:
                deferred.append(task)
        for task in deferred:  # held by another process when first reached
            owner = batch.attempt(task)
            if owner is not None:
                batch.summary.elsewhere.append((task.slide_id, owner))
            _advance(bar)
    finally:
        bar.close()
        rebuild_run_files(out_dir, run_files)
    summary = batch.summary
    logger.info("batch: %d done, %d skipped, %d failed, %d left to other processes",
                len(summary.done), len(summary.skipped), len(summary.failed), len(summary.elsewhere))
    return summary
