#!/usr/bin/env python
"""Training benchmark (issue 4, acceptance 1).

Generates the documented benchmark cohort (synthetic, ``--preset benchmark``:
slides of at least 20,480 x 22,528 px at 0.25 um/px, fixed seed), trains with the
default config (configs/train.yaml) and prints the held-out test metrics and wall
times. Targets: slide AUROC >= 0.95, tile AUROC >= 0.90, attention localisation
AUROC >= 0.85, under an hour on 2 CPU cores.

    .venv/bin/python scripts/benchmark_training.py --out benchmark_out
    # a smaller documented run when time is short:
    .venv/bin/python scripts/benchmark_training.py --out bench_small --cohort-preset small --slides 24
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

SEED = 2026
N_SLIDES = 24
TARGETS = {"slide_auroc": 0.95, "tile_auroc": 0.90, "attention_localisation_auroc": 0.85}


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) the cohort, train, print metrics; exit 0 when all targets are met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmark_out"))
    parser.add_argument("--slides", type=int, default=N_SLIDES)
    parser.add_argument("--cohort-preset", default="benchmark", choices=("tiny", "small", "benchmark"))
    parser.add_argument("--config", default=None, help="training YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--synth-workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from histo_net.config import load_config
    from histo_net.synth import generate_cohort
    from histo_net.train.config import TrainConfig
    from histo_net.train.run import run_training

    t0 = time.perf_counter()
    manifest = args.out / "cohort" / "manifest.csv"
    if not manifest.is_file():
        manifest = generate_cohort(args.out / "cohort", n_slides=args.slides, seed=SEED,
                                   preset=args.cohort_preset, workers=args.synth_workers, preview=False)
    t_synth = time.perf_counter() - t0
    cfg = load_config(TrainConfig, args.config, args.overrides)
    t1 = time.perf_counter()
    bundle = run_training(manifest, args.out / "run", cfg, device=args.device, workers=args.workers,
                          progress=False)
    t_train = time.perf_counter() - t1
    metrics = json.loads((args.out / "run" / "metrics.json").read_text())
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "cohort": {"preset": args.cohort_preset, "slides": args.slides, "seed": SEED},
        "synth_seconds": round(t_synth, 1), "train_seconds": round(t_train, 1),
        "bundle": str(bundle),
        **{k: metrics.get(k) for k in ("slide_auroc", "slide_auroc_ci", "balanced_accuracy",
                                       "ece_before_scaling", "ece_after_scaling", "tile_auroc",
                                       "attention_localisation_auroc", "n_slides", "run")},
    }
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = True
    for key, target in TARGETS.items():
        value = metrics.get(key)
        passed = isinstance(value, (int, float)) and value >= target
        ok &= passed
        print(f"{key:32s} {value if value is None else round(value, 4)!s:>8}  target >= {target}  "
              f"{'PASS' if passed else 'FAIL'}")
    print(f"wall time: synth {t_synth:.0f} s, train {t_train:.0f} s (target < 3600 s on 2 CPU cores)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
