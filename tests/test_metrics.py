"""Metrics cross-checked against scikit-learn; ROC plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from histo_net.metrics import (
    auroc,
    balanced_accuracy,
    bootstrap_ci,
    confusion_matrix,
    expected_calibration_error,
)
from histo_net.train.plots import roc_curve_points, roc_png


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_auroc_with_ties_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # many ties
    assert auroc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr = roc_curve_points(labels, scores)
    sk_fpr, sk_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_multiclass_auroc_and_binary_two_column() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200) + np.eye(3)[labels] * 0.3
    probs /= probs.sum(1, keepdims=True)
    assert auroc(labels, probs) == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr")
    )
    two = probs[:, :2] / probs[:, :2].sum(1, keepdims=True)
    lab2 = labels.clip(0, 1)
    assert auroc(lab2, two) == pytest.approx(skm.roc_auc_score(lab2, two[:, 1]))
    assert np.isnan(auroc(np.zeros(5, int), rng.random(5)))


def test_balanced_accuracy_and_confusion() -> None:
    rng = np.random.default_rng(3)
    labels, preds = rng.integers(0, 4, 150), rng.integers(0, 4, 150)
    assert balanced_accuracy(labels, preds) == pytest.approx(
        skm.balanced_accuracy_score(labels, preds)
    )
    np.testing.assert_array_equal(
        confusion_matrix(labels, preds, 4), skm.confusion_matrix(labels, preds, labels=range(4))
    )


def test_bootstrap_ci_contains_point_estimate() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 100)
    scores = rng.random(100) + 0.5 * labels
    lo, hi = bootstrap_ci(auroc, labels, scores, n_boot=200, seed=0)
    assert lo < auroc(labels, scores) < hi and hi - lo < 0.3
    assert bootstrap_ci(auroc, labels, scores, n_boot=200, seed=0) == (lo, hi)


def test_ece_known_values() -> None:
    labels = np.array([0, 0, 1, 1])
    perfect = np.eye(2)[labels]
    assert expected_calibration_error(perfect, labels) == pytest.approx(0.0)
    overconfident = np.array([[1.0, 0.0]] * 4)  # always 100% sure of class 0, right half the time
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.5)


def test_roc_png(tmp_path: Path) -> None:
    path = tmp_path / "roc.png"
    roc_png(path, np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.4, 0.6]), "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
