"""compute_metrics: slide metrics from the one decision rule, strict JSON, tile metrics."""

from __future__ import annotations

import json

import numpy as np

from histo_net.train.evaluation import EvalSet, compute_metrics, report_markdown

CLASSES = ["neuroendocrine", "other_small_round_cell"]


def _ev(logits: np.ndarray, labels: list[int]) -> EvalSet:
    n = len(labels)
    return EvalSet(slide_ids=[f"s{i}" for i in range(n)], labels=np.asarray(labels),
                   logits=np.asarray(logits, np.float32), attention=[np.ones(3) / 3] * n,
                   tile_probs=[np.full((3, 2), 0.5, np.float32)] * n, tile_labels=[None] * n,
                   in_tumour=[None] * n)


def test_metrics_follow_the_decision_rule() -> None:
    # P(neuroendocrine) with T=1: sigmoid(l0 - l1)
    diffs = np.array([3.0, 1.0, 0.1, -0.1, -1.0, -3.0])
    logits = np.stack([diffs, np.zeros_like(diffs)], axis=1)
    labels = [0, 0, 1, 0, 1, 1]
    result = compute_metrics(_ev(logits, labels), class_names=CLASSES, tile_class_names=CLASSES,
                             positive_class=CLASSES[0], temperature=1.0, threshold=0.5,
                             band=(0.45, 0.55), bootstrap_samples=50)
    assert [r.predicted for r in result.per_slide] == [CLASSES[i] for i in (0, 0, 0, 1, 1, 1)]
    assert [r.indeterminate for r in result.per_slide] == [False, False, True, True, False, False]
    assert result.confusion_matrix == [[2, 1], [1, 2]]
    assert result.balanced_accuracy == 2 / 3 and result.indeterminate_fraction == 2 / 6
    assert result.balanced_accuracy_determinate == 1.0
    assert result.slide_auroc == (8 / 9)
    lo, hi = result.slide_auroc_ci
    assert 0.0 <= lo <= result.slide_auroc <= hi <= 1.0


def test_single_class_set_gives_strict_json_and_markdown() -> None:
    result = compute_metrics(_ev(np.zeros((2, 2)), [1, 1]), class_names=CLASSES,
                             tile_class_names=CLASSES, positive_class=CLASSES[0], temperature=2.0,
                             threshold=0.5, band=(0.4, 0.6), bootstrap_samples=10)
    data = result.to_json()
    text = json.dumps(data, allow_nan=False)  # NaN AUROC becomes null, never NaN
    assert data["slide_auroc"] is None and "per_slide" in data and "NaN" not in text
    assert "per_slide" not in result.to_json(per_slide=False)
    assert "| slide AUROC | n/a" in report_markdown(result, "t")
