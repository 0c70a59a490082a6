"""Classification metrics in numpy: AUROC, balanced accuracy, confusion, bootstrap CIs, ECE."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata


def _binary_auroc(labels01: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties; nan when one class only."""
    labels01 = np.asarray(labels01).astype(bool)
    n_pos = int(labels01.sum())
    n_neg = int(labels01.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels01].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUROC (``scores`` (N,), labels 0/1) or macro one-vs-rest (``scores`` (N,C)).

    Returns nan when only one class is present. For (N,C), classes absent from
    ``labels`` are skipped (nan when fewer than two classes are present); a (N,2)
    input is scored as binary on column 1, as sklearn does.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return _binary_auroc(labels == 1, scores)
    if scores.shape[1] == 2:
        return _binary_auroc(labels == 1, scores[:, 1])
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    values = [_binary_auroc(labels == c, scores[:, c]) for c in present]
    return float(np.mean(values))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C,C)`` int64 counts; rows are true classes, columns predictions."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    preds = np.asarray(preds).astype(np.int64).ravel()
    flat = labels * num_classes + preds
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean per-class recall over classes present in ``labels``."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    preds = np.asarray(preds).astype(np.int64).ravel()
    if labels.size == 0:
        return float("nan")
    recalls = [float(np.mean(preds[labels == c] == c)) for c in np.unique(labels)]
    return float(np.mean(recalls))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` of ``metric(labels, scores)``; nan resamples dropped."""
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        value = metric(labels[idx], scores[idx])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: ``sum_b |B|/N * |acc(B) - conf(B)|`` over ``n_bins`` equal-width bins.

    ``probs`` (N,C) rows summing to 1; ``labels`` (N,) ints. A (N,) input is
    treated as the positive-class probability of a binary problem.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    if labels.size == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)
