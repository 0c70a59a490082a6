"""Temperature scaling, threshold and indeterminate band; reliability plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histo_net.calibration import (
    DEFAULT_HALF_BAND,
    calibrated_probs,
    choose_indeterminate_band,
    choose_threshold,
    fit_temperature,
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


def test_indeterminate_band() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(0.5 + 0.3 * (labels * 2 - 1) + rng.normal(0, 0.2, 400), 0, 1)
    t = choose_threshold(probs, labels)
    lo, hi = choose_indeterminate_band(probs, labels, t, target_precision=0.95)
    assert lo <= t <= hi and hi - lo > 0
    assert labels[probs > hi].mean() >= 0.95
    assert (1 - labels[probs < lo]).mean() >= 0.95
    lo2, hi2 = choose_indeterminate_band(probs, labels, t, target_precision=0.99)
    assert lo2 <= lo and hi2 >= hi  # stricter precision widens the band
    tiny = choose_indeterminate_band(np.array([0.2, 0.8]), np.array([0, 1]), 0.5)
    assert tiny == pytest.approx((0.5 - DEFAULT_HALF_BAND, 0.5 + DEFAULT_HALF_BAND))
