"""Many slides: resolve inputs, take this process's shard, resume, isolate failures, summarise.

Used by ``histo-net predict`` and ``histo-net demo``. Under ``torchrun`` each rank takes the
shard (RANK, WORLD_SIZE) and uses ``cuda:LOCAL_RANK`` when CUDA is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from histo_net.batch.runner import BatchSummary, SlideTask, run_batch
from histo_net.batch.state import input_sha256, load_hash_cache, read_states
from histo_net.distributed import device_for_rank, resolve_shard, select_shard
from histo_net.predict.model import load_model
from histo_net.predict.pipeline import PredictConfig, predict_slide
from histo_net.predict.summary import SlideSummary, prediction_run_files
from histo_net.wsi.inputs import SlideSpec, resolve_inputs

logger = logging.getLogger(__name__)


def _input_sha256(path: Path, cache: dict) -> str | None:
    try:
        return input_sha256(path, cache) if path.is_file() else None
    except OSError:
        return None


def _settings_hash(cfg: PredictConfig) -> str:
    relevant = cfg.model_dump(exclude={"batch_size", "workers"})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def print_summary(summary: BatchSummary, out_dir: Path, stream: TextIO = sys.stdout) -> None:
    """A short table of this run's slides read back from the state files."""
    touched = set(summary.done) | set(summary.skipped) | {f[0] for f in summary.failed}
    print(f"{'slide':<28} {'status':<8} {'outcome':<40} {'tiles':>6}", file=stream)
    for state in read_states(out_dir):
        if state.slide_id not in touched:
            continue
        summ = SlideSummary.from_json(state.summary)
        pred = "" if summ is None else summ.display()
        tiles = "" if summ is None else summ.tile_count
        print(f"{state.slide_id[:28]:<28} {state.status:<8} {pred[:40]:<40} {tiles:>6}", file=stream)
    print(f"done {len(summary.done)}, skipped (already done) {len(summary.skipped)}, "
          f"failed {len(summary.failed)}; results: {out_dir / 'predictions.csv'}", file=stream)


def run_predict(inputs: Sequence[str | Path], *, model_path: Path, out_dir: Path, cfg: PredictConfig,
                device_name: str = "auto", mpp_override: float | None = None, shard: str | None = None,
                overwrite: bool = False, progress: bool = True) -> BatchSummary:
    """Predict all slides of ``inputs`` (this process's shard) into ``out_dir``."""
    specs = resolve_inputs(list(inputs), mpp_override=mpp_override)
    index, count = resolve_shard(shard)
    specs = select_shard(specs, index, count, key=lambda s: s.slide_id)
    model = load_model(model_path, device_for_rank(device_name))
    by_id: dict[str, SlideSpec] = {s.slide_id: s for s in specs}
    settings = _settings_hash(cfg)
    hash_cache = load_hash_cache(out_dir) if out_dir.exists() else {}
    tasks = [SlideTask(slide_id=s.slide_id, path=s.path, label=s.label,
                       input_key={"input_sha256": _input_sha256(s.path, hash_cache),
                                  "bundle_sha256": model.bundle_sha256, "settings": settings,
                                  "mpp": s.mpp})
             for s in specs]

    def process(task: SlideTask, slide_dir: Path) -> SlideSummary:
        return predict_slide(by_id[task.slide_id], model, slide_dir, cfg,
                             input_sha256=task.input_key["input_sha256"] or "", progress=progress)

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = run_batch(tasks, process, out_dir=out_dir, overwrite=overwrite, progress=progress,
                        run_files=prediction_run_files(list(model.bundle.class_names)))
    if progress:
        print_summary(summary, out_dir)
    return summary
