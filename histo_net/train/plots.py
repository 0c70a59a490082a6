"""Evaluation plots (ROC, reliability) as PNG files; matplotlib Agg imported inside functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from histo_net.io_utils import atomic_path
from histo_net.metrics import auroc
from histo_net.metrics import expected_calibration_error as ece


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), dpi=120)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Any, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def roc_curve_points(labels01: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False/true positive rates ``(K,)`` over descending score thresholds, starting at (0, 0)."""
    y = np.asarray(labels01).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / max(1, y.sum())]
    fpr = np.r_[0.0, fp / max(1, (~y).sum())]
    return fpr, tpr


def roc_png(path: Path, labels01: np.ndarray, scores: np.ndarray, title: str) -> None:
    """Write a ROC curve PNG for binary ``labels01`` (N,) and positive-class ``scores`` (N,)."""
    fpr, tpr = roc_curve_points(labels01, scores)
    fig, ax = _figure()
    ax.plot(fpr, tpr, lw=2, label=f"AUROC = {auroc(labels01, scores):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower right")
    _save(fig, path)


def _reliability(
    probs: np.ndarray, labels: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], axis=1)
    conf = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels).astype(np.int64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    centers, accs = [], []
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            centers.append(conf[sel].mean())
            accs.append(correct[sel].mean())
    return np.array(centers), np.array(accs)


def reliability_png(
    path: Path,
    probs_before: np.ndarray,
    probs_after: np.ndarray,
    labels: np.ndarray,
    title: str,
    n_bins: int = 10,
) -> None:
    """Write a reliability diagram (confidence vs accuracy) before/after calibration, with ECE."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect")
    for probs, name, marker in ((probs_before, "before", "o"), (probs_after, "after", "s")):
        conf, acc = _reliability(probs, labels, n_bins)
        ax.plot(conf, acc, marker=marker, label=f"{name} (ECE {ece(probs, labels, n_bins):.3f})")
    ax.set(xlabel="Confidence", ylabel="Accuracy", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left")
    _save(fig, path)
