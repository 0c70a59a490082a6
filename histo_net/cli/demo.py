"""``histo-net demo``: synthesise a small cohort, train, predict held-out slides, print the report path."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from histo_net.cli.common import positive_int
from histo_net.io_utils import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare demo's options."""
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--slides", type=positive_int, default=24, help="synthetic slides (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="cohort and training seed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")


def held_out_manifest(cohort_manifest: Path, split_of: dict[str, str], out_path: Path) -> int:
    """Write the cohort manifest rows of test-split slides to ``out_path``; returns the count."""
    with open(cohort_manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = [row for row in reader if split_of.get(row["slide_id"]) == "test"]
    base = cohort_manifest.parent
    for row in rows:  # absolute paths, so the new manifest can live elsewhere
        for key in ("path", "annotations", "mask"):
            if row.get(key):
                row[key] = str((base / row[key]).resolve())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_path, buffer.getvalue())
    return len(rows)


class StageTicker:
    """Prints ``label: <count> (<elapsed> s)`` every ``every_s`` from a daemon thread while a
    silent stage runs (synthesis, training), so the demo never sits quiet for minutes."""

    def __init__(self, label: str, count: Callable[[], str], every_s: float = 15.0,
                 stream: TextIO | None = None) -> None:
        self.label, self.count, self.every_s = label, count, every_s
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="histo-net-demo-ticker", daemon=True)

    def line(self) -> str:
        """The progress line as it reads now."""
        return f"      {self.label}: {self.count()} ({time.perf_counter() - self.start:.0f} s)"

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> StageTicker:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1.0)


def count_files(folder: Path, pattern: str, total: int | None = None) -> Callable[[], str]:
    """``"k/total <pattern> files"`` counter of ``folder`` for a :class:`StageTicker`."""
    def count() -> str:
        n = len(list(folder.glob(pattern))) if folder.is_dir() else 0
        return f"{n}/{total} written" if total is not None else f"{n} written"
    return count


def training_progress(run_dir: Path) -> Callable[[], str]:
    """Counter of a training run folder: tiled slides, epoch checkpoints, embedded slides."""
    def count() -> str:
        parts = [(name, len(list((run_dir / sub).glob(pattern))) if (run_dir / sub).is_dir() else 0)
                 for name, sub, pattern in (("slides tiled", "tiles", "*.h5"),
                                            ("checkpoints", "checkpoints", "*.pt"),
                                            ("slides embedded", "features", "*.h5"))]
        return ", ".join(f"{name} {n}" for name, n in parts)
    return count


def run(args: argparse.Namespace) -> int:
    """Synthesise, train (demo preset), predict the held-out slides and print where the report is."""
    # deferred imports: torch and the whole pipeline load only when the demo runs (fast --help)
    from histo_net.config import build_config
    from histo_net.predict.pipeline import PredictConfig
    from histo_net.predict.run import run_predict
    from histo_net.synth import generate_cohort
    from histo_net.train.config import TrainConfig
    from histo_net.train.presets import preset_overrides
    from histo_net.train.run import run_training
    from histo_net.train.splits import read_splits_csv

    out_dir, seed = Path(args.out), int(args.seed)
    t0 = time.perf_counter()
    print(f"[1/4] synthesising {args.slides} slides (preset small, seed {seed}) ...", flush=True)
    slides_dir = out_dir / "cohort" / "slides"
    with StageTicker("slides", count_files(slides_dir, "*.*", args.slides)):
        manifest = generate_cohort(out_dir / "cohort", n_slides=args.slides, seed=seed,
                                   preset="small", workers=min(2, os.cpu_count() or 1))
    print(f"      {manifest}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("[2/4] training tile CNN + attention MIL (demo preset) ...", flush=True)
    data = preset_overrides("demo")
    data["seed"] = seed
    cfg = build_config(TrainConfig, data, source="demo preset")
    run_dir = out_dir / "run"
    with StageTicker("training", training_progress(run_dir)):
        bundle_path = run_training(manifest, run_dir, cfg, device=args.device, workers=args.workers)
    print(f"      {bundle_path}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("[3/4] predicting held-out slides ...", flush=True)
    held_out = out_dir / "held_out.csv"
    n_test = held_out_manifest(manifest, read_splits_csv(out_dir / "run" / "splits.csv"), held_out)
    summary = run_predict([held_out], model_path=bundle_path, out_dir=out_dir / "predictions",
                          cfg=PredictConfig(), device_name=args.device)
    print(f"[4/4] done in {time.perf_counter() - t0:.0f} s: {n_test} held-out slides", flush=True)
    reports = sorted((out_dir / "predictions").glob("*/report.html"))
    metrics = out_dir / "run" / "metrics.json"
    if metrics.exists():
        print(f"      training metrics: {metrics}")
    if reports:
        print(f"      open the report: {reports[0].resolve()}")
    return summary.exit_code()
