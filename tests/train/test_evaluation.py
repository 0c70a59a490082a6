"""compute_metrics: slide metrics from the one decision rule, strict JSON, tile metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from histo_net.features.ood import DomainCheck
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


def _check(group: str, passed: bool) -> DomainCheck:
    return DomainCheck(name=f"x_{group}:max", group=group, label=group, value=2.0 if not passed else 0.5,
                       limit=1.0, kind="max", passed=passed)


def test_outcomes_come_from_the_checks_and_the_band() -> None:
    diffs = np.array([4.0, 4.0, 4.0, 0.05, -4.0, -4.0])  # P(NET) 0.98, 0.98, 0.98, 0.51, 0.02, 0.02
    logits = np.stack([diffs, np.zeros_like(diffs)], axis=1)
    ev = _ev(logits, [0, 0, 1, 0, 0, 1])
    ev.checks = [[_check("image", False)], [_check("tumour", False)], [], [], [_check("embedding", True)],
                 []]
    result = compute_metrics(ev, class_names=CLASSES, tile_class_names=CLASSES, positive_class=CLASSES[0],
                             temperature=1.0, threshold=0.5, band=(0.45, 0.55), bootstrap_samples=0)
    assert [r.outcome for r in result.per_slide] == [
        "not_assessable", "no_tumour_detected", CLASSES[0], "indeterminate", CLASSES[1], CLASSES[1]]
    assert result.per_slide[0].failed_checks == ["x_image 2 > 1"]
    assert result.outcome_counts == {CLASSES[0]: 1, CLASSES[1]: 2, "indeterminate": 1,
                                     "no_tumour_detected": 1, "not_assessable": 1}
    # wrong argmax slides: s2 (other called NET at 0.98) and s4 (NET called other at 0.98)
    assert result.wrong_confident_above_95 == 2 and result.confident_fraction == 0.5
    assert result.confident_error_rate == 2 / 3 and result.wrong_caught_fraction == 0.0
    text = report_markdown(result, "t")
    assert "| wrong confident calls with P > 0.95 | 2 |" in text and "not_assessable" in text


def test_evaluate_refuses_training_slides_unless_allowed(tiny_cohort: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Acceptance: `evaluate` refuses an overlapping cohort and says how many it found."""
    from histo_net.cli.main import main
    from histo_net.io_utils import sha256_file
    from histo_net.models.bundle import save_bundle
    from histo_net.models.untrained import untrained_bundle
    from histo_net.train.run import _check_overlap, overlapping_slides
    from histo_net.wsi.inputs import read_manifest

    specs = read_manifest(tiny_cohort)
    bundle = untrained_bundle(tile_size_px=32, target_mpp=1.0)
    # slide 0 by id and sha256, slide 1 by sha256 only (a renamed copy), slide 2 by id only
    bundle.training_slides = {"train": {"slide_ids": [specs[0].slide_id, "renamed"],
                                        "sha256": [sha256_file(specs[0].path), sha256_file(specs[1].path)]},
                              "val": {"slide_ids": [specs[2].slide_id], "sha256": [""]}}
    save_bundle(tmp_path / "model.pt", bundle)
    found = overlapping_slides(bundle, list(specs))
    assert found == {"by_sha256": [specs[0].slide_id, specs[1].slide_id],
                     "by_slide_id": [specs[0].slide_id, specs[2].slide_id]}
    code = main(["evaluate", "--model", str(tmp_path / "model.pt"), "--manifest", str(tiny_cohort),
                 "--out", str(tmp_path / "eval"), "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and f"3 of {len(specs)} slides were used to train or validate" in err
    assert "--allow-overlap" in err and not (tmp_path / "eval" / "metrics.json").exists()
    allowed = _check_overlap(bundle, list(specs), allow=True)  # what --allow-overlap records
    assert allowed["overlapping_slides"] == 3 and allowed["by_sha256"] == 2 and allowed["allowed"]


def test_tumour_tile_auroc_ignores_non_tumour_tiles_and_subtypes_are_tabled() -> None:
    """A head that only tells tumour from stroma scores high on the 3-class average and 0.5 on
    the top-level question over tumour tiles; the per-subtype table counts each subtype."""
    tiles = ["non_tumour", *CLASSES]
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    probs = np.array([[0.9, 0.05, 0.05]] * 3 + [[0.1, 0.45, 0.45]] * 4, np.float32)  # no label signal
    ev = _ev(np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 2.0]]), [0, 0, 1])
    ev.tile_probs, ev.tile_labels = [probs] * 3, [labels] * 3
    ev.in_tumour, ev.attention = [labels > 0] * 3, [np.linspace(0, 1, 7)] * 3
    ev.subtypes = ["nec_small_cell", "merkel_cell_like", "ewing_like"]
    result = compute_metrics(ev, class_names=CLASSES, tile_class_names=tiles, positive_class=CLASSES[0],
                             temperature=1.0, threshold=0.5, band=(0.45, 0.55), bootstrap_samples=0)
    metrics = result.to_json()
    assert metrics["tile_auroc_tumour_vs_non_tumour"] == 1.0
    assert metrics["tile_auroc_tumour_tiles_top_level"] == 0.5
    assert set(metrics["per_subtype"]) == {"nec_small_cell", "merkel_cell_like", "ewing_like"}
    assert metrics["per_subtype"]["ewing_like"]["correct_fraction"] == 1.0
    assert [r["subtype"] for r in metrics["per_slide"]] == ev.subtypes
    assert "## By subtype" in report_markdown(result, "t")
