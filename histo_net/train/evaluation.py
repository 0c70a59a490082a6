"""Slide- and tile-level metrics on a labelled set, and the files they go to.

Slide AUROC with a bootstrap CI, balanced accuracy, confusion matrix, ECE before
and after temperature scaling; with annotations, tile AUROC and attention
localisation AUROC. Outputs: metrics.json, report.md, roc.png, reliability.png.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from histo_net.calibration import calibrated_probs
from histo_net.features.ood import EMBEDDING, IMAGE, TUMOUR, DomainCheck, group_passed
from histo_net.io_utils import atomic_write_text, json_safe
from histo_net.metrics import (
    auroc,
    balanced_accuracy,
    bootstrap_ci,
    confusion_matrix,
    expected_calibration_error,
)
from histo_net.models.hierarchy import SubtypeHead
from histo_net.predict.decision import decide_outcomes, effective_band
from histo_net.taxonomy import INDETERMINATE, NO_TUMOUR_DETECTED, NON_TUMOUR, NOT_ASSESSABLE
from histo_net.train.plots import reliability_png, roc_png

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
    checks: list[list[DomainCheck]] | None = None      # per slide, the slide checks that ran
    subtypes: list[str] | None = None                  # per slide, the manifest's subtype ("" unknown)
    subtype_logits: npt.NDArray[np.float32] | None = None  # (S,K) MIL logits of a subtype head
    subtype_head: SubtypeHead | None = None            # the K subtypes (``target: subtype``)


@dataclass
class SlideResult:
    """One slide's call in an evaluation: truth, argmax class, probabilities, outcome.

    ``predicted`` is the class with the highest calibrated probability (what every metric
    uses); ``outcome`` the decision rule's outcome; ``failed_checks`` the one-line reasons.
    """

    slide_id: str
    label: str
    predicted: str
    probabilities: dict[str, float]
    indeterminate: bool
    outcome: str = ""
    failed_checks: list[str] = field(default_factory=list)
    subtype: str = ""
    #: subtype head only: the most probable subtype and the differential (sums to 1)
    subtype_predicted: str = ""
    subtype_probabilities: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalResult:
    """All metrics of one labelled set (NaN where undefined); ``to_json`` gives metrics.json."""

    n_slides: int
    class_counts: dict[str, int]
    slide_auroc: float
    slide_auroc_ci: tuple[float, float]
    ci_level: float
    balanced_accuracy: float
    accuracy: float
    confusion_matrix: list[list[int]]
    confusion_matrix_classes: list[str]
    ece_before_scaling: float
    ece_after_scaling: float
    indeterminate_fraction: float
    balanced_accuracy_determinate: float
    temperature: float
    threshold: float
    indeterminate_band: tuple[float, float]
    positive_class: str
    tile_metrics: dict[str, float] = field(default_factory=dict)
    outcome_counts: dict[str, int] = field(default_factory=dict)
    confident_fraction: float = float("nan")
    confident_error_rate: float = float("nan")
    wrong_confident_above_95: int = 0
    wrong_caught_fraction: float = float("nan")
    per_subtype: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: subtype head only: macro one-vs-rest AUROC (CI), accuracy, balanced accuracy, confusion
    subtype_metrics: dict[str, Any] = field(default_factory=dict)
    per_slide: list[SlideResult] = field(default_factory=list)

    def to_json(self, *, per_slide: bool = True) -> dict[str, Any]:
        """Strict-JSON dict (NaN -> null): the headline keys, tile metrics flat, per-slide rows."""
        data = asdict(self)
        data.pop("tile_metrics")
        data.update(self.tile_metrics)
        if not per_slide:
            data.pop("per_slide")
        return json_safe(data)


def _tile_metrics(ev: EvalSet, tile_class_names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    pairs = [(p, t) for p, t in zip(ev.tile_probs, ev.tile_labels)
             if t is not None and len(t) and p.shape[1] == len(tile_class_names)]
    if pairs and NON_TUMOUR in tile_class_names:
        probs = np.concatenate([p for p, _ in pairs])
        labels = np.concatenate([t for _, t in pairs])
        out["tile_auroc"] = auroc(labels, probs)
        nt = tile_class_names.index(NON_TUMOUR)
        out["tile_auroc_tumour_vs_non_tumour"] = auroc((labels != nt).astype(int), 1.0 - probs[:, nt])
        out["n_tiles"] = float(len(labels))
        out.update(_tumour_tile_auroc(labels, probs, nt))
    per_slide = []
    for attn, inside in zip(ev.attention, ev.in_tumour):
        if inside is not None and 0 < inside.sum() < len(inside):
            per_slide.append(auroc(inside.astype(int), attn))
    if per_slide:
        vals = [v for v in per_slide if math.isfinite(v)]
        out["attention_localisation_auroc"] = float(np.mean(vals)) if vals else float("nan")
        out["attention_localisation_slides"] = float(len(vals))
    return out


def _tumour_tile_auroc(labels: np.ndarray, probs: np.ndarray, nt: int) -> dict[str, float]:
    """AUROC of the top-level question on annotated tumour tiles only (binary tile heads).

    ``labels`` (N,) tile class index, ``probs`` (N,Ct); the score is the first tumour class's
    probability renormalised over the tumour classes, so non-tumour tiles do not inflate it
    (the 3-class ``tile_auroc`` averages in tumour-vs-stroma, which is easy).
    """
    tumour = [i for i in range(probs.shape[1]) if i != nt]
    keep = labels != nt
    if len(tumour) != 2 or not keep.any():
        return {}
    sub = probs[keep][:, tumour]
    score = sub[:, 0] / np.clip(sub.sum(axis=1), 1e-12, None)
    return {"tile_auroc_tumour_tiles_top_level": auroc((labels[keep] == tumour[0]).astype(int), score),
            "n_tumour_tiles": float(keep.sum())}


def _per_subtype(subtypes: list[str], labels: np.ndarray, preds: np.ndarray, cal: np.ndarray,
                 outcome: list[str], pos: int) -> dict[str, dict[str, Any]]:
    """Per manifest subtype: slides, share called right (argmax), mean P(positive), outcomes."""
    table: dict[str, dict[str, Any]] = {}
    for name in sorted({s for s in subtypes if s}):
        idx = np.asarray([s == name for s in subtypes])
        outs = [o for o, k in zip(outcome, idx) if k]
        table[name] = {"n_slides": int(idx.sum()),
                       "correct_fraction": float(np.mean(preds[idx] == labels[idx])),
                       "mean_p_positive": float(cal[idx, pos].mean()),
                       "outcomes": {o: outs.count(o) for o in sorted(set(outs))}}
    return table


def subtype_differential(ev: EvalSet, cal: np.ndarray) -> np.ndarray | None:
    """(S,K) subtype probabilities consistent with the calibrated (S,C) ``cal`` (None without a head)."""
    if ev.subtype_head is None or ev.subtype_logits is None:
        return None
    return ev.subtype_head.differential(ev.subtype_logits, cal)


def _subtype_metrics(ev: EvalSet, diff: np.ndarray, subtypes: list[str], *, bootstrap_samples: int,
                     ci_level: float, seed: int) -> dict[str, Any]:
    """Macro OvR AUROC with CI, accuracy, balanced accuracy and confusion over the slides
    whose manifest subtype is one of the head's (``diff`` (S,K) from :func:`subtype_differential`)."""
    head = ev.subtype_head
    assert head is not None
    keep = np.asarray([s in head.names for s in subtypes], dtype=bool)
    truth = np.asarray([head.index_of(s) for s, k in zip(subtypes, keep) if k], dtype=np.int64)
    probs = diff[keep]
    preds = probs.argmax(axis=1) if len(truth) else np.zeros(0, np.int64)
    nan = float("nan")
    macro = auroc(truth, probs) if len(truth) else nan
    ci = (bootstrap_ci(auroc, truth, probs, n_boot=bootstrap_samples, seed=seed, alpha=1.0 - ci_level)
          if bootstrap_samples > 0 and len(truth) else (nan, nan))
    return {"subtype_names": list(head.names), "n_slides": len(truth), "macro_auroc": macro,
            "macro_auroc_ci": list(ci), "accuracy": float(np.mean(preds == truth)) if len(truth) else nan,
            "balanced_accuracy": balanced_accuracy(truth, preds) if len(truth) else nan,
            "confusion_matrix": confusion_matrix(truth, preds, len(head.names)).tolist()}


def _outcomes(ev: EvalSet, cal: np.ndarray, class_names: list[str], threshold: float,
              band: tuple[float, float], pos: int) -> tuple[list[str], np.ndarray]:
    """Outcome per slide (the one rule) and (S,) bool inside-the-band flags."""
    n = len(ev.labels)
    if not n:
        return [], np.zeros(0, bool)
    checks = ev.checks or [[] for _ in range(n)]
    out = decide_outcomes(cal, class_names=class_names, threshold=threshold, band=band,
                          positive_index=pos, image_ok=[group_passed(c, IMAGE) for c in checks],
                          tumour_detected=[group_passed(c, TUMOUR) for c in checks],
                          embedding_ok=[group_passed(c, EMBEDDING) for c in checks])
    return out.outcome, out.indeterminate


def compute_metrics(
    ev: EvalSet, *, class_names: list[str], tile_class_names: list[str], positive_class: str,
    temperature: float, threshold: float, band: tuple[float, float],
    bootstrap_samples: int = 1000, ci_level: float = 0.95, ece_bins: int = 10, seed: int = 0,
) -> EvalResult:
    """All metrics of one labelled set; outcomes come from the one rule, ``decide_outcomes``.

    AUROC, ECE, balanced accuracy and the confusion matrix use every slide's calibrated
    probabilities (argmax class); the outcome metrics say what the rule did with them:
    share of confident calls, their error rate, wrong confident calls above P = 0.95 and the
    share of wrong (argmax) slides the rule did not call confidently.
    """
    n_cls = len(class_names)
    labels = np.asarray(ev.labels, dtype=np.int64)
    n = len(labels)
    raw = calibrated_probs(ev.logits, 1.0) if n else np.zeros((0, n_cls))
    cal = calibrated_probs(ev.logits, temperature) if n else np.zeros((0, n_cls))
    pos = class_names.index(positive_class)
    preds = cal.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
    outcome, in_band = _outcomes(ev, cal, class_names, threshold, band, pos)
    confident = np.asarray([o in class_names for o in outcome], dtype=bool)
    if n_cls == 2:
        scores: np.ndarray = cal[:, pos]
        target = (labels == pos).astype(int)
    else:
        scores, target = cal, labels
    nan = float("nan")
    slide_auc = auroc(target, scores) if n else nan
    lo, hi = (bootstrap_ci(auroc, target, scores, n_boot=bootstrap_samples, seed=seed,
                           alpha=1.0 - ci_level)
              if bootstrap_samples > 0 and n else (nan, nan))
    wrong = preds != labels
    top_p = cal.max(axis=1) if n else np.zeros(0)
    counts = {name: int(sum(o == name for o in outcome))
              for name in (*class_names, INDETERMINATE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE)}
    checks = ev.checks or [[] for _ in range(n)]
    subtypes = list(ev.subtypes) if ev.subtypes is not None else [""] * n
    diff = subtype_differential(ev, cal) if n else None
    head_names = list(ev.subtype_head.names) if diff is not None and ev.subtype_head else []
    sub_rows = ([{k: float(v) for k, v in zip(head_names, row)} for row in diff] if diff is not None
                else [{} for _ in range(n)])
    return EvalResult(
        n_slides=n, class_counts={name: int((labels == i).sum()) for i, name in enumerate(class_names)},
        slide_auroc=slide_auc, slide_auroc_ci=(lo, hi), ci_level=ci_level,
        balanced_accuracy=balanced_accuracy(labels, preds), accuracy=float(np.mean(preds == labels)) if n else nan,
        confusion_matrix=confusion_matrix(labels, preds, n_cls).tolist(),
        confusion_matrix_classes=list(class_names),
        ece_before_scaling=expected_calibration_error(raw, labels, ece_bins) if n else nan,
        ece_after_scaling=expected_calibration_error(cal, labels, ece_bins) if n else nan,
        indeterminate_fraction=float(np.mean([o == INDETERMINATE for o in outcome])) if n else nan,
        balanced_accuracy_determinate=(balanced_accuracy(labels[confident], preds[confident])
                                       if confident.any() else nan),
        temperature=float(temperature), threshold=float(threshold),
        indeterminate_band=(effective_band(band, threshold) if n_cls == 2 else
                            (float(band[0]), float(band[1]))), positive_class=positive_class,
        tile_metrics=_tile_metrics(ev, tile_class_names), outcome_counts=counts,
        confident_fraction=float(confident.mean()) if n else nan,
        confident_error_rate=float(wrong[confident].mean()) if confident.any() else nan,
        wrong_confident_above_95=int((wrong & confident & (top_p > 0.95)).sum()),
        wrong_caught_fraction=float((~confident[wrong]).mean()) if wrong.any() else nan,
        per_subtype=_per_subtype(subtypes, labels, preds, cal, outcome, pos) if n else {},
        subtype_metrics=(_subtype_metrics(ev, diff, subtypes, bootstrap_samples=bootstrap_samples,
                                          ci_level=ci_level, seed=seed) if diff is not None else {}),
        per_slide=[SlideResult(sid, class_names[int(y)], class_names[int(p)],
                               {c: float(v) for c, v in zip(class_names, prob)}, bool(ind), str(o),
                               [c.short() for c in ch if not c.passed], st,
                               max(sp, key=sp.__getitem__) if sp else "", sp)
                   for sid, y, p, prob, ind, o, ch, st, sp in zip(ev.slide_ids, labels, preds, cal, in_band,
                                                                  outcome, checks, subtypes, sub_rows)])


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def report_markdown(result: EvalResult, title: str, extra: dict[str, Any] | None = None) -> str:
    """A short markdown report of ``result`` (the per-slide table included)."""
    metrics = result.to_json()
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
             f"| indeterminate fraction | {_fmt(metrics['indeterminate_fraction'])} |",
             "| outcomes | " + ", ".join(f"{k}: {v}" for k, v in metrics["outcome_counts"].items()) + " |",
             (f"| confident calls: share / error rate | {_fmt(metrics['confident_fraction'])} / "
              f"{_fmt(metrics['confident_error_rate'])} |"),
             f"| wrong confident calls with P > 0.95 | {metrics['wrong_confident_above_95']} |",
             f"| wrong slides not called confidently | {_fmt(metrics['wrong_caught_fraction'])} |"]
    tile_rows = (("tile_auroc_tumour_tiles_top_level", f"tile AUROC on tumour tiles, {result.positive_class} vs other"),
                 ("tile_auroc", "tile AUROC (3-class average, includes non-tumour)"),
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
    if metrics["per_subtype"]:
        lines += ["", "## By subtype (manifest column `subtype`)", "",
                  f"| subtype | slides | called right | mean P({result.positive_class}) | outcomes |",
                  "|---|---|---|---|---|"]
        for name, row in metrics["per_subtype"].items():
            outs = ", ".join(f"{k}: {v}" for k, v in row["outcomes"].items())
            lines.append(f"| {name} | {row['n_slides']} | {_fmt(row['correct_fraction'])} | "
                         f"{_fmt(row['mean_p_positive'])} | {outs} |")
    lines += _subtype_lines(metrics["subtype_metrics"])
    band = ", ".join(_fmt(v) for v in metrics["indeterminate_band"])
    rule = (f"Temperature {_fmt(metrics['temperature'])}, threshold {_fmt(metrics['threshold'])} "
            f"on P({metrics['positive_class']}), indeterminate band [{band}].")
    lines += ["", rule,
              "", "![ROC](roc.png) ![reliability](reliability.png)", "",
              "## Slides", "", "| slide | truth | subtype | highest probability | outcome | failed checks |",
              "|---|---|---|---|---|---|"]
    for row in metrics["per_slide"]:
        p = row["probabilities"].get(row["predicted"])
        reasons = "; ".join(row["failed_checks"]) or ""
        lines.append(f"| {row['slide_id']} | {row['label']} | {row['subtype']} | {row['predicted']} ({_fmt(p)}) | "
                     f"{row['outcome']} | {reasons} |")
    return "\n".join(lines) + "\n"


def _subtype_lines(sm: dict[str, Any]) -> list[str]:
    """Markdown of a subtype head's metrics and confusion matrix (none without a head)."""
    if not sm:
        return []
    ci = sm.get("macro_auroc_ci") or [None, None]
    names = sm["subtype_names"]
    lines = ["", "## Subtype differential (model trained with target: subtype)", "",
             (f"Macro one-vs-rest AUROC {_fmt(sm['macro_auroc'])} (CI {_fmt(ci[0])} to {_fmt(ci[1])}), "
              f"accuracy {_fmt(sm['accuracy'])}, balanced accuracy {_fmt(sm['balanced_accuracy'])} "
              f"over {sm['n_slides']} slides with a known subtype."), "",
             "| truth \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, sm["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def write_evaluation(out_dir: Path, result: EvalResult, ev: EvalSet, *, class_names: list[str],
                     positive_class: str, temperature: float, title: str,
                     extra: dict[str, Any] | None = None, ece_bins: int = 10) -> None:
    """metrics.json, report.md, roc.png and reliability.png into ``out_dir``."""
    out_dir = Path(out_dir)
    payload = {**result.to_json(), **({"run": json_safe(extra)} if extra else {})}
    atomic_write_text(out_dir / "metrics.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out_dir / "report.md", report_markdown(result, title, extra))
    if len(ev.labels) == 0:
        return
    pos = class_names.index(positive_class)
    raw = calibrated_probs(ev.logits, 1.0)
    cal = calibrated_probs(ev.logits, temperature)
    roc_png(out_dir / "roc.png", (ev.labels == pos).astype(int), cal[:, pos],
            f"{title}: {positive_class} vs rest")
    reliability_png(out_dir / "reliability.png", raw, cal, ev.labels, title, n_bins=ece_bins)
