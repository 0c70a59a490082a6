"""``predict`` and ``evaluate`` make the same call on the same slide (one rule, one pass)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from histo_net.predict.decision import decide
from histo_net.predict.pipeline import PredictConfig
from histo_net.predict.run import run_predict
from histo_net.train.run import evaluate_bundle
from tests.predict_fixtures import make_untrained_bundle


def test_predict_and_evaluate_agree_per_slide(tiny_cohort: Path, tmp_path: Path) -> None:
    bundle = make_untrained_bundle(tmp_path / "model.pt")
    result = evaluate_bundle(bundle, tiny_cohort, tmp_path / "eval", device="cpu", workers=0)
    summary = run_predict([tiny_cohort], model_path=bundle, out_dir=tmp_path / "pred",
                          cfg=PredictConfig(batch_size=64, workers=0), device_name="cpu",
                          progress=False)
    assert summary.exit_code() == 0 and len(result.per_slide) == 8
    for row in result.per_slide:
        report = json.loads((tmp_path / "pred" / row.slide_id / "report.json").read_text())
        assert report["predicted_class"] == row.predicted, row.slide_id
        assert (report["status"] != "ok") == row.indeterminate, row.slide_id
        for name, p in row.probabilities.items():
            assert report["probabilities"][name] == pytest.approx(p, abs=1e-5), row.slide_id


def test_decide_binary_band_edges_and_threshold() -> None:
    p_pos = np.array([0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 1.0])
    probs = np.stack([p_pos, 1 - p_pos], axis=1)  # positive class in column 0
    preds, ind = decide(probs, threshold=0.5, band=(0.4, 0.55), positive_index=0)
    assert preds.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert ind.tolist() == [False, False, True, True, True, True, False, False]  # edges inclusive
    preds1, ind1 = decide(probs[4], threshold=0.5, band=(0.4, 0.55), positive_index=0)
    assert preds1.tolist() == [0] and ind1.tolist() == [True]  # one slide, same rule
    preds_other, _ = decide(probs[:, ::-1], threshold=0.5, band=(0.4, 0.55), positive_index=1)
    assert preds_other.tolist() == [1 - v for v in preds.tolist()]


def test_decide_multiclass_argmax_and_band() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    preds, ind = decide(probs, threshold=0.5, band=(0.0, 0.5), positive_index=0)
    assert preds.tolist() == [0, 0, 2] and ind.tolist() == [False, True, False]
