#!/usr/bin/env python
"""Training benchmark (issue 9): train on one synthetic cohort, evaluate on another, per seed.

Cohort A (``--seed-a``, default 101) trains; cohort B (``--seed-b``, 202: other slides, other
patients) is only evaluated, so no figure is measured on the slides or the seed that trained the
model. Both are ``--slides`` slides (default 60) of ``--cohort-preset`` (default ``benchmark``)
at ``standard`` difficulty. Each training seed (``--seeds``, default 0,1,2) trains the whole
pipeline with the default config (plus ``--set`` overrides, e.g. ``target=subtype``) and is
evaluated on B; the table gives each seed, the mean and the spread (max - min).

Targets (issue 9): slide AUROC >= 0.95, subtype macro-AUROC >= 0.90 (``target=subtype``),
tile AUROC on tumour tiles >= 0.90, spread of slide AUROC <= 0.03. Exit 0 when all measured
targets are met, 1 otherwise. The baselines on the same cohorts:
``scripts/benchmark_baselines.py OUT/cohort_A/manifest.csv OUT/cohort_B/manifest.csv
--run OUT/run_seed0 --eval-dir OUT/run_seed0/eval_B``.

    .venv/bin/python scripts/benchmark_training.py --out bench_train
    .venv/bin/python scripts/benchmark_training.py --out bench_train --set target=subtype
    # a small smoke run:
    .venv/bin/python scripts/benchmark_training.py --out bt --cohort-preset tiny --slides 8 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

TARGETS = {"slide_auroc": 0.95, "subtype_macro_auroc": 0.90, "tile_auroc_tumour_tiles_top_level": 0.90}
MAX_SPREAD = 0.03


def _cohort(out: Path, n: int, seed: int, preset: str, workers: int) -> Path:
    from histo_net.synth import generate_cohort

    manifest = out / "manifest.csv"
    if not manifest.is_file():
        generate_cohort(out, n_slides=n, seed=seed, preset=preset, workers=workers, preview=False)
    return manifest


def _figures(metrics: dict[str, Any]) -> dict[str, float | None]:
    sub = metrics.get("subtype_metrics") or {}
    return {"slide_auroc": metrics.get("slide_auroc"), "subtype_macro_auroc": sub.get("macro_auroc"),
            "tile_auroc_tumour_tiles_top_level": metrics.get("tile_auroc_tumour_tiles_top_level"),
            "balanced_accuracy": metrics.get("balanced_accuracy"),
            "wrong_confident_above_95": metrics.get("wrong_confident_above_95")}


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (
        f"{v:.3f}" if isinstance(v, float) else str(v))


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) cohorts A and B, train per seed on A, evaluate on B, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmark_out"))
    parser.add_argument("--slides", type=int, default=60, help="slides per cohort")
    parser.add_argument("--cohort-preset", default="benchmark", choices=("tiny", "small", "benchmark"))
    parser.add_argument("--seed-a", type=int, default=101)
    parser.add_argument("--seed-b", type=int, default=202)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--config", default=None, help="training YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--synth-workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from histo_net.config import load_config
    from histo_net.train.config import TrainConfig
    from histo_net.train.run import evaluate_bundle, run_training

    t0 = time.perf_counter()
    train_m = _cohort(args.out / "cohort_A", args.slides, args.seed_a, args.cohort_preset, args.synth_workers)
    eval_m = _cohort(args.out / "cohort_B", args.slides, args.seed_b, args.cohort_preset, args.synth_workers)
    t_synth = time.perf_counter() - t0
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = load_config(TrainConfig, args.config, [*args.overrides, f"seed={seed}"])
        run = args.out / f"run_seed{seed}"
        t1 = time.perf_counter()
        bundle = run_training(train_m, run, cfg, device=args.device, workers=args.workers, progress=False)
        result = evaluate_bundle(bundle, eval_m, run / "eval_B", device=args.device, workers=args.workers)
        rows.append({"seed": seed, "seconds": time.perf_counter() - t1,
                     **_figures(result.to_json(per_slide=False))})
        print(f"seed {seed}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in rows[-1].items() if k != "seed"),
              flush=True)
    summary: dict[str, Any] = {}
    for key in TARGETS:
        vals = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
        if vals:
            summary[key] = {"mean": sum(vals) / len(vals), "spread": max(vals) - min(vals), "n": len(vals)}
    lines = ["| seed | slide AUROC | subtype macro-AUROC | tumour-tile AUROC | bal. acc | wrong P>0.95 | s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {_fmt(r['slide_auroc'])} | {_fmt(r['subtype_macro_auroc'])} | "
              f"{_fmt(r['tile_auroc_tumour_tiles_top_level'])} | {_fmt(r['balanced_accuracy'])} | "
              f"{r['wrong_confident_above_95']} | {r['seconds']:.0f} |" for r in rows]
    lines.append("| mean (spread) | " + " | ".join(
        f"{_fmt(summary[k]['mean'])} ({_fmt(summary[k]['spread'])})" if k in summary else "n/a"
        for k in TARGETS) + " | | | |")
    met = all(summary[k]["mean"] >= t for k, t in TARGETS.items() if k in summary)
    met = met and ("slide_auroc" not in summary or summary["slide_auroc"]["spread"] <= MAX_SPREAD)
    payload = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()} {os.cpu_count()} cpus", "load_avg": os.getloadavg(),
               "cohorts": {"preset": args.cohort_preset, "slides": args.slides, "seed_a": args.seed_a,
                           "seed_b": args.seed_b}, "overrides": args.overrides, "synth_seconds": t_synth,
               "rows": rows, "summary": summary, "targets": TARGETS, "max_spread": MAX_SPREAD,
               "targets_met": met}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark_training.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print("\n".join(lines))
    print(f"targets {'met' if met else 'NOT met'} (mean >= {TARGETS}, spread <= {MAX_SPREAD})")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
