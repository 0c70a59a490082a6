"""Temperature scaling, threshold and indeterminate band; reliability plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histo_net.calibration import (
    T_MIN,
    calibrated_probs,
    choose_indeterminate_band,
    choose_threshold,
    fit_calibration,
    fit_temperature,
    fit_temperature_detailed,
    prediction_limit,
    wide_band,
)
from histo_net.metrics import balanced_accuracy, expected_calibration_error
from histo_net.train.plots import reliability_png


def _overconfident(n: int, seed: int, scale: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), labels] += 1.5
    return logits * scale, labels


def test_temperature_lowers_ece_on_overconfident_logits(tmp_path: Path) -> None:
    logits, labels = _overconfident(3000, 0)
    temperature = fit_temperature(logits, labels)
    assert temperature > 2.0  # logits were inflated 4x
    before = calibrated_probs(logits, 1.0)
    after = calibrated_probs(logits, temperature)
    assert expected_calibration_error(after, labels) < 0.5 * expected_calibration_error(
        before, labels
    )
    np.testing.assert_allclose(after.sum(1), 1.0)
    assert np.array_equal(after.argmax(1), before.argmax(1))  # scaling keeps the ranking
    test_logits, test_labels = _overconfident(2000, 1)
    assert expected_calibration_error(
        calibrated_probs(test_logits, temperature), test_labels
    ) < expected_calibration_error(calibrated_probs(test_logits, 1.0), test_labels)
    reliability_png(tmp_path / "rel.png", before, after, labels, "test")
    assert (tmp_path / "rel.png").stat().st_size > 1000


def test_underconfident_gives_t_below_one() -> None:
    logits, labels = _overconfident(2000, 2, scale=0.3)
    assert fit_temperature(logits, labels) < 1.0


def test_min_temperature_stops_a_sharpening_fit_and_says_so() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    logits = np.stack([np.zeros(400), (2 * labels - 1) * 0.4 + rng.normal(0, 0.3, 400)], axis=1)
    free = fit_calibration(logits, labels, class_names=["a", "b"], positive_index=1, method="cross_fit")
    assert free.temperature < 1.0  # under-confident fold logits would be sharpened
    held = fit_calibration(logits, labels, class_names=["a", "b"], positive_index=1, method="cross_fit",
                           min_temperature=1.0)
    assert held.temperature == 1.0 and any("never sharpen" in w for w in held.warnings)


def test_threshold_maximises_balanced_accuracy() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(400) < 0.2).astype(int)  # imbalanced: 0.5 is not optimal
    probs = np.clip(0.15 + 0.25 * labels + rng.normal(0, 0.1, 400), 0, 1)
    t = choose_threshold(probs, labels)
    best = balanced_accuracy(labels, probs >= t)
    grid = max(balanced_accuracy(labels, probs >= g) for g in np.linspace(0, 1, 201))
    assert best >= grid - 1e-9
    assert 0.2 < t < 0.45
    assert choose_threshold(probs, np.ones(400)) == 0.5


def test_band_reaches_the_target_error_among_confident_calls() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(0.5 + 0.3 * (labels * 2 - 1) + rng.normal(0, 0.2, 400), 1e-3, 1 - 1e-3)
    t = choose_threshold(probs, labels)
    fit = choose_indeterminate_band(probs, labels, t, target_error=0.05)
    lo, hi = fit.band
    assert fit.reached and lo <= min(t, 0.5) and hi >= max(t, 0.5) and hi - lo > 0
    called = (probs < lo) | (probs > hi)
    wrong = (probs >= t) != labels.astype(bool)
    assert (wrong[called].sum() + 1) / (called.sum() + 2) <= 0.05  # the Laplace estimate it promises
    assert 0.3 < fit.coverage < 1.0
    stricter = choose_indeterminate_band(probs, labels, t, target_error=0.01)
    assert stricter.band[0] <= lo and stricter.band[1] >= hi  # a lower target widens the band


def test_three_slides_give_a_loud_warning_a_wide_band_and_no_clamp() -> None:
    """Acceptance: a 3-slide validation set cannot pretend (issue: T ran to 0.05, band 0.45-0.55)."""
    logits = np.array([[1.0, -1.0], [0.8, -0.8], [-1.2, 1.2]])  # perfectly separated
    labels = np.array([0, 0, 1])
    unsmoothed = fit_temperature_detailed(logits, labels, smoothing=0.0)
    assert unsmoothed.temperature < 0.2  # plain NLL sharpens separable logits without limit
    fit = fit_calibration(logits, labels, class_names=["a", "b"], positive_index=0, method="validation")
    assert not fit.temperature_at_bound and fit.temperature > 1.0  # softened, not sharpened
    assert fit.temperature > 10 * T_MIN
    p = calibrated_probs(logits, fit.temperature)
    assert p.max() < 0.9 and p.max(axis=1).mean() == pytest.approx(0.8, abs=0.05)  # (n+1)/(n+2)
    assert fit.band[0] <= 0.2 and fit.band[1] >= 0.8 and fit.band == wide_band(3, fit.threshold)
    assert fit.error_estimate is None and fit.n_slides == 3
    assert any("rests on 3 slides" in w for w in fit.warnings)
    assert any("cannot show an error rate" in w for w in fit.warnings)


def test_enough_slides_give_a_narrow_band_without_warnings() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 30)
    margin = rng.normal(3.0, 1.0, 60) * np.where(labels == 0, 1, -1)
    logits = np.stack([margin / 2, -margin / 2], axis=1)
    fit = fit_calibration(logits, labels, class_names=["a", "b"], positive_index=0, method="cross_fit")
    assert fit.warnings == [] and fit.n_per_class == {"a": 30, "b": 30}
    assert fit.band[1] - fit.band[0] < 0.6 and fit.coverage > 0.5


def test_prediction_limit_flags_about_alpha_of_new_values() -> None:
    rng = np.random.default_rng(6)
    ref = rng.lognormal(0.0, 0.5, 60)
    limit = prediction_limit(ref, alpha=0.05, kind="max", transform="log")
    new = rng.lognormal(0.0, 0.5, 20000)
    rate = float(np.mean(~np.array([limit.passes(v) for v in new[:4000]])))
    assert 0.02 < rate < 0.09, rate
    low = prediction_limit(ref, alpha=0.05, kind="min", transform="log")
    assert low.limit < np.median(ref) < limit.limit
    assert prediction_limit([1.0], alpha=0.05, kind="max").passes(1e9)  # one value: nothing fails
