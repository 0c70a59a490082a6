"""Batch prediction: resolve inputs, shard, resume, isolate failures, summarise.

Used by ``histo-net predict`` and ``histo-net demo``. Under ``torchrun`` each rank
takes the shard (RANK, WORLD_SIZE) and uses ``cuda:LOCAL_RANK`` when CUDA is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from histo_net.batch.runner import (
    BatchSummary,
    SlideTask,
    input_sha256,
    load_hash_cache,
    parse_shard,
    run_batch,
    select_shard,
    shard_from_env,
)
from histo_net.errors import ConfigError
from histo_net.predict.pipeline import PredictConfig, predict_slide
from histo_net.wsi.inputs import SlideSpec, resolve_inputs

logger = logging.getLogger(__name__)


def _shard(shard: str | None) -> tuple[int, int]:
    """--shard I/N, else the torchrun rank, else the whole list."""
    if shard is not None:
        return parse_shard(shard)
    return shard_from_env() or (0, 1)


def _device_for_rank(device_name: str):
    import torch

    from histo_net.device import select_device

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and device_name in ("auto", "cuda") and torch.cuda.is_available():
        return select_device(f"cuda:{int(local_rank) % torch.cuda.device_count()}")
    return select_device(device_name)


def _input_sha256(path: Path, cache: dict) -> str | None:
    try:
        return input_sha256(path, cache) if path.is_file() else None
    except OSError:
        return None


def _settings_hash(cfg: PredictConfig) -> str:
    relevant = cfg.model_dump(exclude={"batch_size", "workers"})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def print_summary(summary: BatchSummary, out_dir: Path, stream=sys.stdout) -> None:
    """A short table of this run's slides read back from predictions.csv."""
    import csv

    csv_path = out_dir / "predictions.csv"
    if not csv_path.exists():
        return
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    touched = set(summary.done) | set(summary.skipped) | {f[0] for f in summary.failed}
    print(f"{'slide':<28} {'status':<8} {'prediction':<24} {'tiles':>6}", file=stream)
    for row in rows:
        if row["slide_id"] not in touched:
            continue
        pred = row.get("predicted_class") or ""
        if str(row.get("indeterminate", "")).lower() in ("true", "1"):
            pred = f"indeterminate ({pred})"
        print(f"{row['slide_id'][:28]:<28} {row['status']:<8} {pred[:24]:<24} "
              f"{row.get('tile_count') or '':>6}", file=stream)
    print(f"done {len(summary.done)}, skipped (already done) {len(summary.skipped)}, "
          f"failed {len(summary.failed)}; results: {csv_path}", file=stream)


def run_predict(inputs: Sequence[str | Path], *, model_path: Path, out_dir: Path, cfg: PredictConfig,
                device_name: str = "auto", mpp_override: float | None = None, shard: str | None = None,
                overwrite: bool = False, progress: bool = True) -> BatchSummary:
    """Predict all slides of ``inputs`` (this process's shard) into ``out_dir``."""
    from histo_net.predict.decision import load_model

    specs = resolve_inputs(list(inputs), mpp_override=mpp_override)
    if not specs:
        raise ConfigError(f"no slides found in {', '.join(map(str, inputs))}")
    index, count = _shard(shard)
    specs = select_shard(specs, index, count, key=lambda s: s.slide_id)
    model = load_model(model_path, _device_for_rank(device_name))
    by_id: dict[str, SlideSpec] = {s.slide_id: s for s in specs}
    settings = _settings_hash(cfg)
    hash_cache = load_hash_cache(out_dir) if out_dir.exists() else {}
    tasks = [SlideTask(slide_id=s.slide_id, path=s.path, label=s.label,
                       input_key={"input_sha256": _input_sha256(s.path, hash_cache),
                                  "bundle_sha256": model.bundle_sha256, "settings": settings,
                                  "mpp": s.mpp})
             for s in specs]

    def process(task: SlideTask, slide_dir: Path) -> dict:
        return predict_slide(by_id[task.slide_id], model, slide_dir, cfg,
                             input_sha256=task.input_key["input_sha256"] or "", progress=progress)

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = run_batch(tasks, process, out_dir=out_dir, overwrite=overwrite, progress=progress,
                        class_names=list(model.bundle.class_names))
    if progress:
        print_summary(summary, out_dir)
    return summary
