"""Slide- and tile-level metrics on a labelled set, and the files they go to.

Slide AUROC with a bootstrap CI, balanced accuracy, confusion matrix, ECE before
and after temperature scaling; with annotations, tile AUROC and attention
localisation AUROC. Outputs: metrics.json, report.md, roc.png, reliability.png.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from histo_net.io_utils import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Per-slide predictions of a labelled set (row i = slide i)."""

    slide_ids: list[str]
    labels: npt.NDArray[np.int64]                      # (S,) slide class index
    logits: npt.NDArray[np.float32]                    # (S,C) MIL logits
    attention: list[npt.NDArray[np.float32]]           # per slide (N_i,)
    tile_probs: list[npt.NDArray[np.float32]]          # per slide (N_i,Ct)
    tile_labels: list[npt.NDArray[np.int64] | None]    # per slide (N_i,) tile class index
    in_tumour: list[npt.NDArray[np.bool_] | None]      # per slide (N_i,) annotation membership


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, numpy -> python, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite(float(obj))
    return obj


def _tile_metrics(ev: EvalSet, tile_class_names: list[str]) -> dict[str, Any]:
    from histo_net.metrics import auroc

    out: dict[str, Any] = {}
    pairs = [(p, t) for p, t in zip(ev.tile_probs, ev.tile_labels)
             if t is not None and len(t) and p.shape[1] == len(tile_class_names)]
    if pairs and "non_tumour" in tile_class_names:
        probs = np.concatenate([p for p, _ in pairs])
        labels = np.concatenate([t for _, t in pairs])
        out["tile_auroc"] = auroc(labels, probs)
        nt = tile_class_names.index("non_tumour")
        out["tile_auroc_tumour_vs_non_tumour"] = auroc((labels != nt).astype(int), 1.0 - probs[:, nt])
        out["n_tiles"] = len(labels)
    per_slide = []
    for attn, inside in zip(ev.attention, ev.in_tumour):
        if inside is not None and 0 < inside.sum() < len(inside):
            per_slide.append(auroc(inside.astype(int), attn))
    if per_slide:
        vals = [v for v in per_slide if math.isfinite(v)]
        out["attention_localisation_auroc"] = float(np.mean(vals)) if vals else float("nan")
        out["attention_localisation_slides"] = len(vals)
    return out


def compute_metrics(
    ev: EvalSet, *, class_names: list[str], tile_class_names: list[str], positive_class: str,
    temperature: float, threshold: float, band: tuple[float, float],
    bootstrap_samples: int = 1000, ci_level: float = 0.95, ece_bins: int = 10, seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one labelled set as a JSON-ready dict (NaN where undefined)."""
    from histo_net.calibration import calibrated_probs
    from histo_net.metrics import (
        auroc,
        balanced_accuracy,
        bootstrap_ci,
        confusion_matrix,
        expected_calibration_error,
    )

    n_cls = len(class_names)
    labels = np.asarray(ev.labels, dtype=np.int64)
    raw = calibrated_probs(ev.logits, 1.0) if len(labels) else np.zeros((0, n_cls))
    cal = calibrated_probs(ev.logits, temperature) if len(labels) else np.zeros((0, n_cls))
    pos = class_names.index(positive_class)
    if n_cls == 2:
        scores: np.ndarray = cal[:, pos]
        target = (labels == pos).astype(int)
        preds = np.where(scores >= threshold, pos, 1 - pos)
        indeterminate = (scores >= band[0]) & (scores <= band[1])
    else:
        scores, target = cal, labels
        preds = cal.argmax(1) if len(labels) else np.zeros(0, np.int64)
        indeterminate = cal.max(1) < band[1] if len(labels) else np.zeros(0, bool)
    slide_auc = auroc(target, scores) if len(labels) else float("nan")
    lo, hi = (bootstrap_ci(auroc, target, scores, n_boot=bootstrap_samples, seed=seed,
                           alpha=1.0 - ci_level)
              if bootstrap_samples > 0 and len(labels) else (float("nan"), float("nan")))
    determinate = ~indeterminate
    metrics: dict[str, Any] = {
        "n_slides": len(labels),
        "class_counts": {name: int((labels == i).sum()) for i, name in enumerate(class_names)},
        "slide_auroc": slide_auc,
        "slide_auroc_ci": [lo, hi],
        "ci_level": ci_level,
        "balanced_accuracy": balanced_accuracy(labels, preds),
        "accuracy": float(np.mean(preds == labels)) if len(labels) else float("nan"),
        "confusion_matrix": confusion_matrix(labels, preds, n_cls).tolist(),
        "confusion_matrix_classes": list(class_names),
        "ece_before_scaling": expected_calibration_error(raw, labels, ece_bins) if len(labels) else float("nan"),
        "ece_after_scaling": expected_calibration_error(cal, labels, ece_bins) if len(labels) else float("nan"),
        "indeterminate_fraction": float(indeterminate.mean()) if len(labels) else float("nan"),
        "balanced_accuracy_determinate": (balanced_accuracy(labels[determinate], preds[determinate])
                                          if determinate.any() else float("nan")),
        "temperature": float(temperature), "threshold": float(threshold),
        "indeterminate_band": [float(band[0]), float(band[1])], "positive_class": positive_class,
    }
    metrics.update(_tile_metrics(ev, tile_class_names))
    metrics["per_slide"] = [
        {"slide_id": sid, "label": class_names[int(y)], "predicted": class_names[int(p)],
         "probabilities": {c: float(v) for c, v in zip(class_names, prob)},
         "indeterminate": bool(ind)}
        for sid, y, p, prob, ind in zip(ev.slide_ids, labels, preds, cal, indeterminate)
    ]
    return _clean(metrics)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def report_markdown(metrics: dict[str, Any], title: str, extra: dict[str, Any] | None = None) -> str:
    """A short markdown report of ``metrics`` (the per-slide table included)."""
    ci = metrics.get("slide_auroc_ci") or [None, None]
    counts = ", ".join(f"{k}: {v}" for k, v in metrics["class_counts"].items())
    auc = (f"{_fmt(metrics['slide_auroc'])} ({int(100 * metrics['ci_level'])}% CI "
           f"{_fmt(ci[0])} to {_fmt(ci[1])})")
    ece = f"{_fmt(metrics['ece_before_scaling'])} / {_fmt(metrics['ece_after_scaling'])}"
    lines = [f"# {title}", "", "Research use only; not a diagnostic device.", "",
             "| metric | value |", "|---|---|",
             f"| slides | {metrics['n_slides']} ({counts}) |",
             f"| slide AUROC | {auc} |",
             f"| balanced accuracy | {_fmt(metrics['balanced_accuracy'])} |",
             f"| ECE before / after temperature scaling | {ece} |",
             f"| indeterminate fraction | {_fmt(metrics['indeterminate_fraction'])} |"]
    tile_rows = (("tile_auroc", "tile AUROC"),
                 ("tile_auroc_tumour_vs_non_tumour", "tile AUROC tumour vs non-tumour"),
                 ("attention_localisation_auroc", "attention localisation AUROC"))
    for key, name in tile_rows:
        if key in metrics:
            lines.append(f"| {name} | {_fmt(metrics[key])} |")
    for key, value in (extra or {}).items():
        lines.append(f"| {key} | {_fmt(value)} |")
    classes = metrics["confusion_matrix_classes"]
    lines += ["", "## Confusion matrix (rows: truth, columns: prediction)", "",
              "| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    band = ", ".join(_fmt(v) for v in metrics["indeterminate_band"])
    rule = (f"Temperature {_fmt(metrics['temperature'])}, threshold {_fmt(metrics['threshold'])} "
            f"on P({metrics['positive_class']}), indeterminate band [{band}].")
    lines += ["", rule,
              "", "![ROC](roc.png) ![reliability](reliability.png)", "",
              "## Slides", "", "| slide | truth | prediction | indeterminate |", "|---|---|---|---|"]
    for row in metrics["per_slide"]:
        lines.append(f"| {row['slide_id']} | {row['label']} | {row['predicted']} | {row['indeterminate']} |")
    return "\n".join(lines) + "\n"


def write_evaluation(out_dir: Path, metrics: dict[str, Any], ev: EvalSet, *, class_names: list[str],
                     positive_class: str, temperature: float, title: str,
                     extra: dict[str, Any] | None = None, ece_bins: int = 10) -> None:
    """metrics.json, report.md, roc.png and reliability.png into ``out_dir``."""
    from histo_net.calibration import calibrated_probs
    from histo_net.train.plots import reliability_png, roc_png

    out_dir = Path(out_dir)
    payload = {**metrics, **({"run": _clean(extra)} if extra else {})}
    atomic_write_text(out_dir / "metrics.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out_dir / "report.md", report_markdown(metrics, title, extra))
    if len(ev.labels) == 0:
        return
    pos = class_names.index(positive_class)
    raw = calibrated_probs(ev.logits, 1.0)
    cal = calibrated_probs(ev.logits, temperature)
    roc_png(out_dir / "roc.png", (ev.labels == pos).astype(int), cal[:, pos],
            f"{title}: {positive_class} vs rest")
    reliability_png(out_dir / "reliability.png", raw, cal, ev.labels, title, n_bins=ece_bins)
