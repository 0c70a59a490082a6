#!/usr/bin/env python
"""Decisions that hold (issue 10), end to end, in one table.

Train on cohort A; evaluate on a held-out cohort B (another seed) at stain jitter 0.5
(in distribution), 1.0 and 2.0 (the same slides, more stain shift); predict the real H&E
slides and tiles of ``--real-dir`` and a synthetic slide without tumour. Prints one table
(and writes ``OUT/benchmark.json`` / ``OUT/benchmark.md``): slide AUROC with CI, ECE after
calibration, outcome counts, the share of slides flagged (not assessable / no tumour), wrong
confident calls with P > 0.95, and the share of wrong slides the rule did not call.

Several training variants can be compared on the same cohorts, e.g. stain handling:

    python scripts/benchmark_decisions.py --out bench --preset demo \\
        --variant basic=tile_cnn.augmentation=basic --variant strong= \\
        --variant macenko=tile_cnn.stain_normalization=macenko

Cohorts are generated when missing (``--slides``, ``--cohort-preset``, ``--seed-a``,
``--seed-b``); pass ``--train-manifest`` / ``--heldout DIR=JITTER`` to reuse existing ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from histo_net.config import build_config, deep_merge
from histo_net.predict.pipeline import PredictConfig
from histo_net.predict.run import run_predict
from histo_net.synth import generate_cohort
from histo_net.taxonomy import NON_CALL_OUTCOMES
from histo_net.train.config import TrainConfig
from histo_net.train.presets import preset_overrides
from histo_net.train.run import evaluate_bundle, run_training


def no_tumour_slide(out: Path, seed: int, preset: str) -> Path:
    """A synthetic slide with stroma, vessels, fat and lymphocytes only (subtype ``normal``)."""
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        generate_cohort(out, n_slides=1, seed=seed, preset=preset, tumour_fraction=(0.0, 0.0), preview=False)
    with open(manifest, newline="", encoding="utf-8") as fh:
        return out / next(csv.DictReader(fh))["path"]


def cohort(out: Path, n: int, seed: int, preset: str, jitter: float | None) -> Path:
    """``out/manifest.csv``, generated when missing."""
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        t0 = time.perf_counter()
        generate_cohort(out, n_slides=n, seed=seed, preset=preset, stain_jitter=jitter, workers=2,
                        preview=False)
        print(f"  synthesised {out} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return manifest


def outcome_row(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """One table row from an evaluation's metrics."""
    counts = metrics.get("outcome_counts") or {}
    n = metrics["n_slides"]
    flagged = sum(counts.get(k, 0) for k in ("not_assessable", "no_tumour_detected"))
    return {"cohort": name, "slides": n, "auroc": metrics.get("slide_auroc"),
            "auroc_ci": metrics.get("slide_auroc_ci"), "ece_after": metrics.get("ece_after_scaling"),
            "balanced_accuracy": metrics.get("balanced_accuracy"),
            "confident": sum(v for k, v in counts.items() if k not in NON_CALL_OUTCOMES),
            "indeterminate": counts.get("indeterminate", 0),
            "not_assessable": counts.get("not_assessable", 0),
            "no_tumour": counts.get("no_tumour_detected", 0), "flagged_fraction": flagged / max(n, 1),
            "wrong": round((1 - (metrics.get("accuracy") or 0)) * n),
            "wrong_confident_p95": metrics.get("wrong_confident_above_95"),
            "wrong_caught": metrics.get("wrong_caught_fraction")}


def predict_rows(name: str, inputs: list[Path], model: Path, out: Path, mpp: float | None) -> list[dict]:
    """Predict ``inputs``; one row per input with its outcome (failed inputs say so)."""
    if not inputs:
        return []
    run_predict(inputs, model_path=model, out_dir=out, cfg=PredictConfig(workers=0), device_name="cpu",
                mpp_override=mpp, progress=False, overwrite=True)
    rows = []
    for state_file in sorted((out / ".state").glob("*.json")):
        state = json.loads(state_file.read_text())
        summary = state.get("summary") or {}
        rows.append({"cohort": name, "input": state["slide_id"], "outcome": summary.get("outcome") or
                     f"failed: {(state.get('error') or '')[:60]}",
                     "reasons": "; ".join(summary.get("reasons") or []),
                     "probabilities": summary.get("probabilities")})
    return rows


def fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return format(v, spec)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"{v[0]:.2f}-{v[1]:.2f}"
    return str(v)


def table(rows: list[dict], pred_rows: list[dict]) -> str:
    """Markdown: the cohort rows, then the per-input rows of real and no-tumour slides."""
    head = ("| variant | cohort | slides | AUROC (95% CI) | ECE | bal. acc | confident / indet. / "
            "not assessable / no tumour | flagged | wrong | wrong confident P>0.95 | wrong not called |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['cohort']} | {r['slides']} | {fmt(r['auroc'])} ({fmt(r['auroc_ci'])}) "
                     f"| {fmt(r['ece_after'])} | {fmt(r['balanced_accuracy'])} | {r['confident']} / "
                     f"{r['indeterminate']} / {r['not_assessable']} / {r['no_tumour']} | "
                     f"{r['flagged_fraction']:.0%} | {r['wrong']} | {r['wrong_confident_p95']} | "
                     f"{fmt(r['wrong_caught'], '.0%') if r['wrong_caught'] is not None else 'n/a'} |")
    lines += ["", "| variant | input | outcome | failed checks |", "|---|---|---|---|"]
    for r in pred_rows:
        lines.append(f"| {r['variant']} | {r['cohort']}: {r['input']} | {r['outcome']} | {r['reasons']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--train-manifest", type=Path, default=None, help="cohort A (default: synthesised)")
    ap.add_argument("--heldout", action="append", default=[], metavar="MANIFEST=JITTER",
                    help="held-out cohort manifest and its stain jitter (repeatable; default: synthesised)")
    ap.add_argument("--slides", type=int, default=24, help="slides per synthesised cohort")
    ap.add_argument("--cohort-preset", default="small")
    ap.add_argument("--seed-a", type=int, default=101)
    ap.add_argument("--seed-b", type=int, default=202)
    ap.add_argument("--jitters", default="0.5,1.0,2.0", help="held-out stain jitters to synthesise")
    ap.add_argument("--preset", default="demo", help="training preset (demo or benchmark)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="training override")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                    help="train and benchmark a variant with extra overrides (repeatable)")
    ap.add_argument("--real-dir", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    ap.add_argument("--tile-mpp", type=float, default=0.5, help="mpp given to the real PNG tiles")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_manifest = args.train_manifest or cohort(out / "cohort_A", args.slides, args.seed_a,
                                                   args.cohort_preset, None)
    heldout: list[tuple[str, Path]] = []
    for item in args.heldout:
        path, jitter = item.rsplit("=", 1)
        heldout.append((f"B jitter {jitter}", Path(path)))
    if not heldout:
        for jitter in (float(j) for j in args.jitters.split(",")):
            heldout.append((f"B jitter {jitter:g}", cohort(out / f"cohort_B_j{jitter:g}", args.slides,
                                                          args.seed_b, args.cohort_preset, jitter)))
    no_tumour = no_tumour_slide(out / "no_tumour", args.seed_b + 7, args.cohort_preset)
    real_wsi = sorted((args.real_dir / "wsi").glob("*.svs")) if args.real_dir.is_dir() else []
    real_tiles = sorted((args.real_dir / "he_tiles").glob("*.png")) if args.real_dir.is_dir() else []
    variants = [v.split("=", 1) for v in args.variant] or [["default", ""]]
    rows: list[dict] = []
    pred_rows: list[dict] = []
    for name, extra in variants:
        data = deep_merge({}, preset_overrides(args.preset))
        overrides = list(args.overrides) + [o for o in extra.split(",") if o]
        cfg = build_config(TrainConfig, data, overrides, source=f"variant {name}")
        run = out / f"run_{name}"
        t1 = time.perf_counter()
        bundle = run_training(train_manifest, run, cfg, device="cpu", workers=args.workers, progress=False)
        print(f"[{name}] trained in {time.perf_counter() - t1:.0f} s: {bundle}", flush=True)
        for label, manifest in heldout:
            tag = label.replace(" ", "_")
            result = evaluate_bundle(bundle, manifest, run / f"eval_{tag}", device="cpu", workers=args.workers)
            rows.append({"variant": name, **outcome_row(label, result.to_json(per_slide=False))})
            print(f"[{name}] {label}: AUROC {fmt(result.slide_auroc)}, outcomes {result.outcome_counts}",
                  flush=True)
        for label, inputs, mpp in (("no tumour", [no_tumour], None), ("real WSI", real_wsi, None),
                                   ("real tile", real_tiles, args.tile_mpp)):
            rows_here = predict_rows(label, inputs, bundle, run / f"predict_{label.replace(' ', '_')}", mpp)
            pred_rows += [{"variant": name, **r} for r in rows_here]
    text = table(rows, pred_rows)
    (out / "benchmark.json").write_text(json.dumps({"rows": rows, "inputs": pred_rows}, indent=2,
                                                   default=str) + "\n")
    (out / "benchmark.md").write_text(text + "\n")
    print(text)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
