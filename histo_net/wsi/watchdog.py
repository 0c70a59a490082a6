"""Per-slide wall-clock limit on open, tiling and thumbnail: the work runs in a child process.

A blocked or runaway C call (OpenSlide scanning a folder that holds a named pipe, a
thumbnail of a file declaring 200,000 x 200,000 px, a decoder stuck on a damaged file)
cannot be interrupted from Python, so :func:`tile_with_limit` runs ``open_slide`` +
``tile_slide`` in a child forked from a clean fork server and kills it at the deadline:
the slide fails with ``SlideTimeoutError`` and the batch goes on. A child that dies (a
crash inside a C library) fails the slide with ``SlideReadError`` instead of the run.

The limit is ``timeout_s`` when given (``--slide-timeout S``), else
:func:`default_slide_timeout_s` of the slide's declared size, known once it opened
(before that, :data:`OPEN_LIMIT_S`). The child also arms ``SIGALRM`` as a backstop, so it
never outlives its limit even if the parent was killed. Without the ``forkserver`` start
method (non-POSIX), or inside a daemonic process (a DataLoader or pool worker), the work
runs in-process: the open keeps its hard limit, the tiling has none.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histo_net.config import TilingConfig
from histo_net.errors import HistoNetError, SlideReadError, SlideTimeoutError
from histo_net.wsi.slide import open_slide
from histo_net.wsi.tiling import TilingResult, tile_slide

log = logging.getLogger(__name__)

#: limit (s) until the slide has opened, when no --slide-timeout is given
OPEN_LIMIT_S = 60.0
#: default limit: this many seconds plus SECONDS_PER_GPX per level-0 gigapixel
BASE_LIMIT_S = 120.0
SECONDS_PER_GPX = 60.0
_START_METHOD = "forkserver"


def default_slide_timeout_s(width_px: int, height_px: int) -> float:
    """Default wall-clock limit (s) for open + tiling + thumbnail of a ``width x height`` slide."""
    return BASE_LIMIT_S + SECONDS_PER_GPX * float(width_px) * float(height_px) / 1e9


@dataclass
class TiledSlide:
    """What the child hands back: the tiling and the geometry the tiles h5 records."""

    result: TilingResult
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) per level
    vendor: str | None
    seconds: float


def tile_in_process(path: Path, mpp: float | None, cfg: TilingConfig) -> TiledSlide:
    """Open + tile ``path`` in this process (no limit); typed ``HistoNetError`` s."""
    start = time.perf_counter()
    with open_slide(path, mpp_override=mpp) as slide:
        result = tile_slide(slide, cfg)
        return TiledSlide(result, slide.level_dimensions, slide.vendor, time.perf_counter() - start)


def _child(conn: Any, path: str, mpp: float | None, cfg: TilingConfig, limit_s: float | None) -> None:
    """Child body: report the declared size once open, then the tiling (or the error)."""
    signal.alarm(math.ceil(limit_s or OPEN_LIMIT_S) + 5)  # backstop: the default action kills us
    try:
        start = time.perf_counter()
        with open_slide(path, mpp_override=mpp) as slide:
            width, height = slide.dimensions
            if limit_s is None:
                signal.alarm(math.ceil(default_slide_timeout_s(width, height)) + 5)
            conn.send(("opened", (width, height)))
            result = tile_slide(slide, cfg)
            tiled = TiledSlide(result, slide.level_dimensions, slide.vendor,
                               time.perf_counter() - start)
        conn.send(("done", tiled))
    except BaseException as exc:  # noqa: BLE001  every failure goes back to the parent
        try:
            conn.send(("error", exc))
        except Exception:  # noqa: BLE001  unpicklable exception: send its one line
            conn.send(("error", SlideReadError(f"{path}: {type(exc).__name__}: {exc}")))
    finally:
        conn.close()


def _context() -> Any:
    """The fork-server context (its server preloads this module once), or None (no fork
    server on this platform, or a daemonic process, which may not have children)."""
    if _START_METHOD not in multiprocessing.get_all_start_methods():
        return None
    if multiprocessing.current_process().daemon:
        return None
    ctx = multiprocessing.get_context(_START_METHOD)
    ctx.set_forkserver_preload([__name__, "openslide"])
    return ctx


def _receive(conn: Any, proc: Any, deadline: float) -> tuple[str, Any] | None:
    """The child's next message before ``deadline`` (monotonic), None on timeout."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if conn.poll(min(left, 0.5)):
            try:
                return conn.recv()
            except EOFError:
                return ("died", None)
        if not proc.is_alive() and not conn.poll(0):
            return ("died", None)


def tile_with_limit(path: Path, mpp: float | None, cfg: TilingConfig,
                    timeout_s: float | None = None) -> TiledSlide:
    """Open and tile ``path`` in a child process under a wall-clock limit.

    ``timeout_s`` None: :data:`OPEN_LIMIT_S` to open, then :func:`default_slide_timeout_s`
    of the declared size in total. Raises the child's ``HistoNetError`` (re-raised here),
    ``SlideTimeoutError`` past the limit, ``SlideReadError`` when the child crashed.
    """
    path = Path(path)
    ctx = _context()
    if ctx is None:
        return tile_in_process(path, mpp, cfg)
    start = time.monotonic()
    limit = float(timeout_s) if timeout_s is not None else OPEN_LIMIT_S
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, str(path), mpp, cfg, timeout_s),
                       name=f"histo-net-tile-{os.getpid()}", daemon=True)
    proc.start()
    sender.close()
    try:
        while True:
            message = _receive(receiver, proc, start + limit)
            if message is None:
                what = "open, tiling and thumbnail" if timeout_s is not None else (
                    "opening" if limit == OPEN_LIMIT_S else "tiling and thumbnail")
                raise SlideTimeoutError(
                    f"{path}: {what} did not finish within {limit:.0f} s (--slide-timeout"
                    f"{'' if timeout_s is not None else ' default, scaled by slide size'}); "
                    "the slide was stopped and skipped")
            kind, payload = message
            if kind == "opened" and timeout_s is None:
                limit = default_slide_timeout_s(*payload)
            elif kind == "done":
                return payload
            elif kind == "error":
                if isinstance(payload, HistoNetError):
                    raise payload
                raise SlideReadError(f"{path}: {type(payload).__name__}: {payload}")
            elif kind == "died":
                proc.join(1.0)
                code = proc.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise SlideReadError(f"{path}: the slide reader crashed ({how}) while opening or "
                                     "tiling; the file is probably corrupt")
    finally:
        receiver.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
