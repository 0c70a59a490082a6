"""Streaming batch prediction: one reader pool and one model thread for all of a run's slides.

``histo-net predict`` on many slides runs three things at once:

- **tiling** (open + tissue + tile grid, in the watchdog's child process) of the next
  slide, started in a thread pool while the current slide is embedded;
- **the model thread**: one :class:`PersistentTileReader` (a DataLoader over batch work
  items with ``persistent_workers``: reader processes and their slide handles live for the
  whole run) feeding the one :class:`~histo_net.features.embed.BatchEncoder`;
- **the batch runner's thread** (:func:`histo_net.batch.runner.run_batch`): takes each
  embedded slide with :meth:`SlideStream.take`, runs MIL + decision, and writes the report
  (heatmaps, HTML, GeoJSON) while the model thread already embeds the next slides. A
  slide is still ``done`` only after its report files exist, and an error of any stage
  (tiling, reading, model, report) fails that slide alone with its one-line typed reason.

The model thread runs at most ``lookahead`` slides ahead of the runner; slides the runner
asks for out of order (deferred claims) are computed on request.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from histo_net.errors import HistoNetError, SlideReadError
from histo_net.features.embed import (
    BatchEncoder,
    SlideEmbedding,
    _batches_or_typed_error,
    embed_batches,
    progress_bar,
)
from histo_net.features.tiles import HandleCache, to_chw_tensor
from histo_net.wsi.inputs import SlideSpec
from histo_net.wsi.slide import ReadPlan
from histo_net.wsi.tiling import TilingResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchItem:
    """One batch of tiles to read: the slide, its (B,2) level-0 coords and read plan."""

    slide_path: str
    coords: np.ndarray  # (B,2) int64 level-0 x, y
    plan: ReadPlan
    mpp_override: float | None = None


class BatchReadDataset(Dataset):
    """Map-style dataset indexed by :class:`BatchItem`: item -> (B,3,H,W) uint8 tensor.

    Stateless apart from the per-process :class:`HandleCache`, so one set of persistent
    workers serves slide after slide and keeps the recent slides open.
    """

    def __init__(self, max_open: int = 4) -> None:
        self._handles = HandleCache(max_open=max_open)

    def __len__(self) -> int:  # pragma: no cover - the sampler decides the length
        return 0

    def __getitem__(self, item: BatchItem) -> Tensor:  # type: ignore[override]
        tiles = []
        for x, y in item.coords.tolist():
            try:
                slide = self._handles.get(Path(item.slide_path), item.mpp_override)
                tiles.append(to_chw_tensor(slide.read_tile((int(x), int(y)), item.plan)))
            except HistoNetError:
                raise
            except Exception as exc:  # noqa: BLE001  any reader error: one typed line
                text = (str(exc).strip().splitlines() or [""])[0]
                raise SlideReadError(f"{item.slide_path}: cannot read the tile at ({x}, {y}) "
                                     f"({type(exc).__name__}: {text})") from None
        return torch.stack(tiles)  # (B,3,H,W) uint8


class _ItemSampler(Sampler):
    """The work items of the current slide; replaced before each pass of the loader."""

    def __init__(self) -> None:
        self.items: list[BatchItem] = []

    def __iter__(self) -> Iterator[BatchItem]:
        return iter(list(self.items))

    def __len__(self) -> int:
        return len(self.items)


def batch_items(slide_path: Path, coords: np.ndarray, plan: ReadPlan, batch_size: int,
                mpp_override: float | None) -> list[BatchItem]:
    """``coords`` (N,2) cut into consecutive batches of ``batch_size`` (the last one shorter),
    the same batches :func:`histo_net.features.embed.embed_slide` forms."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    return [BatchItem(str(slide_path), coords[i:i + batch_size], plan, mpp_override)
            for i in range(0, len(coords), batch_size)]


class PersistentTileReader:
    """One DataLoader whose worker processes persist across slides (``workers`` 0: in-process).

    :meth:`batches` yields one slide's (B,3,H,W) uint8 batches in order; worker errors come
    back as typed one-liners. After a worker died the loader is rebuilt for the next slide.
    """

    def __init__(self, workers: int, device: torch.device, prefetch_factor: int = 4,
                 max_open: int = 4) -> None:
        self.workers = max(0, int(workers))
        self.device = device
        self.prefetch_factor = prefetch_factor
        self.max_open = max_open
        self._loader: DataLoader | None = None
        self._sampler = _ItemSampler()

    def _make(self) -> DataLoader:
        return DataLoader(BatchReadDataset(self.max_open), batch_size=None, sampler=self._sampler,
                          num_workers=self.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=self.workers > 0,
                          prefetch_factor=self.prefetch_factor if self.workers > 0 else None)

    def batches(self, items: Sequence[BatchItem]) -> Iterator[Tensor]:
        """The tiles of ``items`` (one slide), batch by batch, in order."""
        if not items:
            return
        if self._loader is None:
            self._loader = self._make()
        self._sampler.items = list(items)
        try:
            yield from _batches_or_typed_error(self._loader, Path(items[0].slide_path))
        except SlideReadError as exc:
            if "reading tiles failed" in str(exc):  # a dead worker: start afresh next time
                self.close()
            raise

    def close(self) -> None:
        """Stop the worker processes (a later :meth:`batches` starts new ones)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None) if loader is not None else None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


@dataclass
class PreparedSlide:
    """A slide tiled and embedded, waiting for its MIL pass and report."""

    spec: SlideSpec
    tiling: TilingResult
    embedding: SlideEmbedding


@dataclass
class SlideTiming:
    """When the model thread worked on one slide (``time.monotonic`` seconds).

    ``first_batch_at``/``last_batch_at``: the first batch handed to / the last returned by
    the model; None without tiles. ``tiling_wait_s``: time the model thread waited for the
    tiling (0 when it was ready); ``reader_wait_s``: time it waited for tile batches from
    the readers between the first and the last batch (the rest is the model).
    """

    slide_id: str
    tiles: int
    tiling_wait_s: float
    first_batch_at: float | None = None
    last_batch_at: float | None = None
    reader_wait_s: float = 0.0
    #: time the model thread was held back before this slide because it was ``lookahead``
    #: slides ahead of the report writing (back-pressure: the reports are the slower stage)
    backpressure_s: float = 0.0


def slide_gaps_s(timings: Sequence[SlideTiming], *, exclude_backpressure: bool = False) -> list[float]:
    """Per-slide fixed overhead: seconds between one slide's last batch and the next one's
    first batch, for consecutive slides of the model thread (both with tiles); with
    ``exclude_backpressure`` less the time the model was held back by the report writing."""
    gaps = []
    for prev, cur in itertools.pairwise(timings):
        if prev.last_batch_at is not None and cur.first_batch_at is not None:
            held = cur.backpressure_s if exclude_backpressure else 0.0
            gaps.append(max(0.0, cur.first_batch_at - prev.last_batch_at - held))
    return gaps


Tiler = Callable[[SlideSpec], TilingResult]


@dataclass
class _Slot:
    future: Future = field(default_factory=Future)
    started: bool = False


class SlideStream:
    """The model thread: tiles (one slide ahead) and embeds slides in task order.

    ``tiler(spec)`` returns the slide's tiling or raises (typed); ``skip(slide_id)`` is
    True for slides the runner will not process (already done), which are never computed
    ahead. Use as a context manager; :meth:`take` hands a slide's :class:`PreparedSlide`
    to the runner or raises that slide's error.
    """

    def __init__(self, specs: Sequence[SlideSpec], tiler: Tiler, runner: BatchEncoder,
                 reader: PersistentTileReader, *, batch_size: int,
                 skip: Callable[[str], bool] | None = None, lookahead: int = 2,
                 progress: bool = False,
                 on_timing: Callable[[SlideTiming], None] | None = None) -> None:
        self._specs = {s.slide_id: s for s in specs}
        self._order = [s.slide_id for s in specs]
        self._tiler, self._runner, self._reader = tiler, runner, reader
        self._batch_size, self._progress, self._on_timing = batch_size, progress, on_timing
        self._skip = skip or (lambda _sid: False)
        self._lookahead = max(1, lookahead)
        self._pending: deque[str] = deque(self._order)
        self._requested: deque[str] = deque()
        self._slots: dict[str, _Slot] = {}
        self._ready = 0  # computed, not yet taken (speculative ones count against lookahead)
        self._abandoned: set[str] = set()  # being computed, but the runner already passed them
        self._cond = threading.Condition()
        self._closing = False
        self._tiling_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="histo-net-tiling")
        self._tilings: dict[str, Future] = {}
        self._thread = threading.Thread(target=self._loop, name="histo-net-model", daemon=True)
        self.timings: list[SlideTiming] = []

    def __enter__(self) -> SlideStream:  # noqa: PYI034  (typing.Self needs Python 3.11)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop after the current batch, then shut the reader workers and the tiling pool."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        self._tiling_pool.shutdown(wait=True, cancel_futures=True)
        self._reader.close()

    # -- the runner's side -------------------------------------------------------------
    def take(self, slide_id: str) -> PreparedSlide:
        """The slide's prepared result (blocks until the model thread has it) or its error.

        Results computed ahead for slides before ``slide_id`` that were never taken (the
        runner skipped them) are dropped; they are recomputed if asked for later.
        """
        with self._cond:
            self._drop_untaken_before(slide_id)
            self._abandoned.discard(slide_id)  # asked for after all: deliver it
            slot = self._slots.get(slide_id)
            if slot is None:
                slot = self._slots[slide_id] = _Slot()
                self._requested.append(slide_id)
                self._cond.notify_all()
        try:
            return slot.future.result()
        finally:
            with self._cond:
                if self._slots.get(slide_id) is slot:
                    del self._slots[slide_id]
                    self._ready -= 1
                    self._cond.notify_all()

    def _drop_untaken_before(self, slide_id: str) -> None:
        if slide_id not in self._order:
            return
        before = set(self._order[:self._order.index(slide_id)])
        for sid, slot in list(self._slots.items()):
            if sid not in before:
                continue
            if slot.future.done():
                del self._slots[sid]
                self._ready -= 1
            elif slot.started:  # still being computed: dropped when it finishes
                self._abandoned.add(sid)
        self._cond.notify_all()

    # -- the model thread ---------------------------------------------------------------
    def _next_job(self) -> tuple[str, _Slot] | None:
        """The next slide to compute (requested first, else speculative within lookahead)."""
        with self._cond:
            while True:
                if self._closing:
                    return None
                while self._requested:
                    sid = self._requested.popleft()
                    slot = self._slots.get(sid)
                    if slot is not None and not slot.started:
                        slot.started = True
                        return sid, slot
                while self._pending and (self._pending[0] in self._slots or self._skip(self._pending[0])):
                    self._pending.popleft()
                if self._pending and self._ready < self._lookahead:
                    sid = self._pending.popleft()
                    slot = self._slots[sid] = _Slot(started=True)
                    return sid, slot
                self._cond.wait(timeout=1.0)

    def _peek_next(self) -> str | None:
        with self._cond:
            for sid in self._pending:
                if sid not in self._slots and not self._skip(sid):
                    return sid
        return None

    def _tiling_future(self, slide_id: str) -> Future:
        fut = self._tilings.pop(slide_id, None)
        if fut is None:
            fut = self._tiling_pool.submit(self._tiler, self._specs[slide_id])
        return fut

    def _prefetch_tiling(self, slide_id: str | None) -> None:
        if slide_id is not None and slide_id not in self._tilings:
            for old in [s for s in self._tilings if s != slide_id]:  # stale: order changed
                self._tilings.pop(old).cancel()
            self._tilings[slide_id] = self._tiling_pool.submit(self._tiler, self._specs[slide_id])

    def _loop(self) -> None:
        while True:
            asked = time.monotonic()
            job = self._next_job()
            if job is None:
                return
            slide_id, slot = job
            held_s = time.monotonic() - asked
            try:
                result: Any = self._compute(slide_id, held_s)
            except BaseException as exc:  # noqa: BLE001  handed to the runner as this slide's failure
                result = exc
            with self._cond:
                if slide_id in self._abandoned:  # the runner passed it by: free the slot
                    self._abandoned.discard(slide_id)
                    if self._slots.get(slide_id) is slot:
                        del self._slots[slide_id]
                    slot.future.set_exception(SlideReadError(f"{slide_id}: computed after the runner "
                                                             "passed it by; recomputed on request"))
                    self._cond.notify_all()
                    continue
                self._ready += 1
                if isinstance(result, BaseException):
                    slot.future.set_exception(result)
                else:
                    slot.future.set_result(result)
                self._cond.notify_all()

    def _compute(self, slide_id: str, held_s: float = 0.0) -> PreparedSlide:
        spec = self._specs[slide_id]
        waited = time.monotonic()
        tiling_future = self._tiling_future(slide_id)
        tiling = tiling_future.result()
        timing = SlideTiming(slide_id, len(tiling.coords), time.monotonic() - waited,
                             backpressure_s=held_s)
        self._prefetch_tiling(self._peek_next())  # the next slide tiles while this one embeds
        items = batch_items(spec.path, tiling.coords, tiling.plan, self._batch_size, spec.mpp)
        bar = progress_bar(len(tiling.coords), spec.path.name) if self._progress and items else None

        def batches() -> Iterator[Tensor]:
            asked = time.monotonic()
            for tiles in self._reader.batches(items):
                now = time.monotonic()
                if self._closing:
                    raise SlideReadError(f"{spec.path}: stopped (the run is shutting down)")
                if timing.first_batch_at is None:
                    timing.first_batch_at = now
                else:
                    timing.reader_wait_s += now - asked
                yield tiles
                asked = time.monotonic()

        def done_batch(n: int) -> None:
            timing.last_batch_at = time.monotonic()
            if bar is not None:
                bar.update(n)

        try:
            embedding = embed_batches(self._runner, batches(), done_batch)
        finally:
            if bar is not None:
                bar.close()
        logger.debug("stream: %s: %d tiles, tiling wait %.3f s, first batch %.3f, last batch %.3f",
                     slide_id, timing.tiles, timing.tiling_wait_s, timing.first_batch_at or -1.0,
                     timing.last_batch_at or -1.0)
        self.timings.append(timing)
        if self._on_timing is not None:
            self._on_timing(timing)
        return PreparedSlide(spec=spec, tiling=tiling, embedding=embedding)
