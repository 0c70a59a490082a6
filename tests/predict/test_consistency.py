"""``predict`` and ``evaluate`` make the same call on the same slide (one rule, one pass)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from histo_net.features.ood import fit_domain_reference, tile_area_mm2
from histo_net.features.store import read_features_h5
from histo_net.models.bundle import load_bundle, save_bundle
from histo_net.predict.pipeline import PredictConfig
from histo_net.predict.run import run_predict
from histo_net.taxonomy import NO_TUMOUR_DETECTED, NOT_ASSESSABLE
from histo_net.train.run import evaluate_bundle
from tests.predict_fixtures import make_untrained_bundle


def _bundle_with_checks(tiny_cohort: Path, tmp_path: Path) -> Path:
    """An untrained bundle plus slide checks fitted (tightly) on 3 of the cohort's slides.

    The first evaluation embeds every slide (its features are cached for the second), the
    reference is fitted on three of them with a loose alpha, so that other slides fail checks
    and the comparison covers every kind of outcome the rule can give.
    """
    plain = make_untrained_bundle(tmp_path / "plain.pt")
    evaluate_bundle(plain, tiny_cohort, tmp_path / "eval", device="cpu", workers=0)
    bundle = load_bundle(plain)
    slides = []
    for sid in sorted(p.stem for p in (tmp_path / "eval" / "features").glob("*.h5"))[:3]:
        emb, _, _ = read_features_h5(tmp_path / "eval" / "features" / f"{sid}.h5")
        slides.append((emb.features, emb.tile_probs, emb.qc))
    bundle.domain_reference = fit_domain_reference(
        slides, tile_class_names=bundle.tile_class_names, tile_area=tile_area_mm2(64, 1.0),
        in_bank=[True, True, False], null_tumour_probs=None, alpha=0.45, alpha_tumour=0.3,
        max_tumour_flag_rate=1.0)  # deliberately loose: keep the limit that flags slides
    save_bundle(tmp_path / "model.pt", bundle)
    return tmp_path / "model.pt"


def test_predict_and_evaluate_agree_per_slide(tiny_cohort: Path, tmp_path: Path) -> None:
    bundle = _bundle_with_checks(tiny_cohort, tmp_path)
    result = evaluate_bundle(bundle, tiny_cohort, tmp_path / "eval", device="cpu", workers=0)
    summary = run_predict([tiny_cohort], model_path=bundle, out_dir=tmp_path / "pred",
                          cfg=PredictConfig(batch_size=64, workers=0), device_name="cpu",
                          progress=False)
    assert summary.exit_code() == 0 and len(result.per_slide) == 8
    assert {r.outcome for r in result.per_slide} & {NOT_ASSESSABLE, NO_TUMOUR_DETECTED}
    for row in result.per_slide:
        report = json.loads((tmp_path / "pred" / row.slide_id / "report.json").read_text())
        assert report["outcome"] == row.outcome, row.slide_id
        assert report["predicted_class"] in (row.predicted, None), row.slide_id
        assert [c["description"] for c in report["checks"] if not c["passed"]] == [
            c for c in report["failed_checks"]]
        assert len(report["failed_checks"]) == len(row.failed_checks), row.slide_id
        for name, p in row.probabilities.items():
            assert report["probabilities"][name] == pytest.approx(p, abs=1e-5), row.slide_id
    with open(tmp_path / "pred" / "predictions.csv", newline="") as fh:
        rows = {r["slide_id"]: r for r in csv.DictReader(fh)}
    assert {sid: r["outcome"] for sid, r in rows.items()} == {r.slide_id: r.outcome for r in result.per_slide}
