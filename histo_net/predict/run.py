"""Many slides: resolve inputs, take this process's shard, resume, isolate failures, summarise.

Used by ``histo-net predict`` and ``histo-net demo``. Under ``torchrun`` each rank takes the
shard (RANK, WORLD_SIZE) and uses ``cuda:LOCAL_RANK`` when CUDA is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from histo_net.batch.runner import BatchSummary, SlideTask, is_done, run_batch
from histo_net.batch.state import (
    DONE,
    FAILED,
    input_sha256,
    load_hash_cache,
    read_states,
    rebuild_run_files,
)
from histo_net.device import resolve_workers
from histo_net.distributed import (
    device_for_rank,
    env_rank,
    launched_by_torchrun,
    resolve_shard,
    select_shard,
)
from histo_net.errors import HistoNetError, ModelBundleError
from histo_net.features.embed import BatchEncoder
from histo_net.features.tiles import default_workers
from histo_net.predict.model import LoadedModel, load_model
from histo_net.predict.pipeline import PredictConfig, finish_slide, tile_for_predict
from histo_net.predict.stream import PersistentTileReader, SlideStream, SlideTiming
from histo_net.predict.summary import SlideSummary, prediction_run_files
from histo_net.wsi.inputs import SlideSpec, resolve_inputs
from histo_net.wsi.tiling import TilingResult

logger = logging.getLogger(__name__)


def _input_sha256(path: Path, cache: dict) -> str | None:
    try:
        return input_sha256(path, cache) if path.is_file() else None
    except OSError:
        return None


def _settings_hash(cfg: PredictConfig) -> str:
    relevant = cfg.model_dump(exclude={"batch_size", "workers", "torch_compile"})  # speed only
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _columns(rows: list[list[str]]) -> list[int]:
    return [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]


def summary_rows(out_dir: Path, slide_ids: Sequence[str]) -> list[list[str]]:
    """Table rows (header first) for ``slide_ids`` from their state files: full ids and
    classes, and for a failed slide its error kind and one-line reason."""
    rows = [["slide", "status", "outcome", "tiles", "reason"]]
    wanted = set(slide_ids)
    for state in read_states(out_dir):
        if state.slide_id not in wanted:
            continue
        summ = SlideSummary.from_json(state.summary) if state.status == DONE else None
        pred = "" if summ is None else summ.display()
        tiles = "" if summ is None else str(summ.tile_count)
        reason = (f"[{state.error_type}] {state.error}" if state.status == FAILED
                  else "; ".join(summ.reasons) if summ is not None else "")
        rows.append([state.slide_id, state.status, pred, tiles, reason])
    return rows


def print_summary(summary: BatchSummary, out_dir: Path, stream: TextIO = sys.stdout,
                  slide_ids: Sequence[str] | None = None) -> None:
    """A table of this run's slides (or of ``slide_ids``) read back from the state files.

    Columns are as wide as their longest entry (nothing truncated); failed rows give their
    reason. With ``slide_ids`` (rank 0 after a torchrun) the counts come from the states.
    """
    ids = list(slide_ids) if slide_ids is not None else sorted(summary.touched())
    rows = summary_rows(out_dir, ids)
    widths = _columns(rows)
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]),
                 row[3].rjust(max(widths[3], 5)), row[4]]
        print("  ".join(cells).rstrip(), file=stream)
    if slide_ids is not None:
        statuses = [row[1] for row in rows[1:]]
        counts = (f"done {statuses.count(DONE)}, failed {statuses.count(FAILED)}, "
                  f"not finished {len(ids) - statuses.count(DONE) - statuses.count(FAILED)}")
    else:
        counts = (f"done {len(summary.done)}, skipped (already done) {len(summary.skipped)}, "
                  f"failed {len(summary.failed)}")
        if summary.elsewhere:
            counts += f", left to other processes {len(summary.elsewhere)}"
    print(f"{counts}; results: {out_dir / 'predictions.csv'}", file=stream)


def _load_model(model_path: Path, device_name: str, encoder_weights: Path | None = None) -> LoadedModel:
    """The bundle on this rank's device; every failure is one ``ModelBundleError`` (exit 2)."""
    try:
        return load_model(model_path, device_for_rank(device_name), encoder_weights)
    except HistoNetError:
        raise
    except Exception as exc:  # noqa: BLE001  torch/registry errors of an unusable bundle
        text = (str(exc).strip().splitlines() or [""])[0]
        raise ModelBundleError(f"{model_path}: cannot build the model from this bundle "
                               f"({type(exc).__name__}: {text})") from None


def _wait_for_all_ranks() -> None:
    """Under torchrun, block until every rank finished its shard (a gloo barrier on CPU)."""
    import torch  # deferred: only torchrun runs need it

    from histo_net.distributed import barrier, cleanup, init_distributed

    if init_distributed(torch.device("cpu"), timeout_s=7 * 24 * 3600.0):
        barrier()
        cleanup()


def run_predict(inputs: Sequence[str | Path], *, model_path: Path, out_dir: Path, cfg: PredictConfig,
                device_name: str = "auto", mpp_override: float | None = None, shard: str | None = None,
                overwrite: bool = False, progress: bool = True,
                slide_timeout_s: float | None = None,
                encoder_weights: Path | None = None,
                on_timing: Callable[[SlideTiming], None] | None = None) -> BatchSummary:
    """Predict all slides of ``inputs`` (this process's shard) into ``out_dir``.

    Slides stream through one model thread and one reader pool (:mod:`histo_net.predict.stream`);
    ``on_timing`` receives each slide's model-thread timestamps (benchmarks).

    ``ModelBundleError`` (exit 2) when the model is missing or unusable. Under torchrun
    (no ``--shard``) rank 0 waits for the other ranks and prints the table of all slides.
    """
    all_specs = resolve_inputs(list(inputs), mpp_override=mpp_override)
    index, count = resolve_shard(shard)
    specs = select_shard(all_specs, index, count, key=lambda s: s.slide_id)
    model = _load_model(Path(model_path), device_name, encoder_weights)
    settings = _settings_hash(cfg)
    hash_cache = load_hash_cache(out_dir) if out_dir.exists() else {}
    tasks = [SlideTask(slide_id=s.slide_id, path=s.path, label=s.label,
                       input_key={"input_sha256": _input_sha256(s.path, hash_cache),
                                  "bundle_sha256": model.bundle_sha256, "settings": settings,
                                  "mpp": s.mpp})
             for s in specs]

    out_dir.mkdir(parents=True, exist_ok=True)
    run_files = prediction_run_files(list(model.bundle.class_names))
    by_task = {t.slide_id: t for t in tasks}
    workers = resolve_workers(cfg.workers, model.device, default=default_workers())
    runner = BatchEncoder(model.encoder, model.device, compile=cfg.torch_compile)

    def tiler(spec: SlideSpec) -> TilingResult:
        return tile_for_predict(spec, model, cfg, slide_timeout_s)

    def skip(slide_id: str) -> bool:  # the runner will skip it: never computed ahead
        return not overwrite and is_done(out_dir, by_task[slide_id])

    stream = SlideStream(specs, tiler, runner, PersistentTileReader(workers, model.device),
                         batch_size=cfg.batch_size, skip=skip, progress=progress, on_timing=on_timing)

    def process(task: SlideTask, slide_dir: Path) -> SlideSummary:
        prepared = stream.take(task.slide_id)  # tiled + embedded by the model thread
        # MIL, gallery and report files here, while the model thread embeds the next slides
        return finish_slide(prepared.spec, model, slide_dir, cfg, prepared.tiling, prepared.embedding,
                            input_sha256=task.input_key["input_sha256"] or "")

    with stream:
        summary = run_batch(tasks, process, out_dir=out_dir, overwrite=overwrite, progress=progress,
                            run_files=run_files)
    ranked = shard is None and launched_by_torchrun()
    if ranked:
        _wait_for_all_ranks()
        if env_rank() == 0:  # every rank has finished: the run files now list all slides
            rebuild_run_files(out_dir, run_files)
    if progress and env_rank() == 0:
        print_summary(summary, out_dir, slide_ids=[s.slide_id for s in all_specs] if ranked else None)
    return summary
