"""The no-tumour rule on the count of tumour-positive tiles (features/tumour_burden.py)."""

from __future__ import annotations

import numpy as np
import pytest

from histo_net.features.tumour_burden import (
    MIN_TILE_THRESHOLD,
    TumourTileRule,
    fit_tumour_tile_rule,
    positive_tiles,
    tumour_free_tiles,
)


def _null_slide(rng: np.random.Generator, n: int, rate_scale: float = 1.0) -> np.ndarray:
    """(n,) P(tumour) of tumour-free tiles: mostly low, a slide-specific tail of false positives."""
    tail = rng.uniform(0.0, 0.04) * rate_scale
    p = rng.beta(1.0, 12.0, n)
    false_pos = rng.random(n) < tail
    p[false_pos] = rng.uniform(0.5, 1.0, false_pos.sum())
    return p


@pytest.fixture(scope="module")
def rule() -> TumourTileRule:
    rng = np.random.default_rng(0)
    fitted = fit_tumour_tile_rule([_null_slide(rng, int(rng.integers(100, 600))) for _ in range(30)],
                                  alpha=0.01)
    assert fitted is not None
    return fitted


def _detected(rule: TumourTileRule, p: np.ndarray) -> bool:
    return positive_tiles(p, rule.threshold) >= rule.min_tiles(len(p))


def test_tumour_free_slides_are_rarely_detected(rule: TumourTileRule) -> None:
    rng = np.random.default_rng(1)
    detected = [_detected(rule, _null_slide(rng, int(rng.integers(100, 3000)))) for _ in range(300)]
    assert np.mean(detected) <= 0.03, np.mean(detected)
    assert rule.threshold >= MIN_TILE_THRESHOLD and 0 < rule.null_rate < 0.1


def test_a_small_focus_in_a_large_slide_is_detected(rule: TumourTileRule) -> None:
    """100 tumour tiles in 3000 (3%), where tumour-free slides reach up to 2% false positives."""
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(50):
        p = _null_slide(rng, 3000)
        p[:100] = rng.uniform(0.8, 1.0, 100)
        hits += _detected(rule, p)
    assert hits >= 45, hits


def test_limit_grows_with_slide_size_and_with_slide_to_slide_spread(rule: TumourTileRule) -> None:
    sizes = [10, 100, 1000, 10000]
    need = [rule.min_tiles(n) for n in sizes]
    assert need == sorted(need) and need[0] >= 1 and need[-1] > need[0]
    rng = np.random.default_rng(3)
    # the same mean false-positive rate, homogeneous across slides: a tighter limit
    even = fit_tumour_tile_rule([_null_slide(np.random.default_rng(7), 400, 0.0) for _ in range(30)], alpha=0.01)
    spread = fit_tumour_tile_rule([_null_slide(rng, 400, 3.0) for _ in range(30)], alpha=0.01)
    assert even is not None and spread is not None
    assert spread.rate_a + spread.rate_b < even.rate_a + even.rate_b  # more overdispersed


def test_too_few_reference_tiles_fit_no_rule() -> None:
    rng = np.random.default_rng(4)
    assert fit_tumour_tile_rule([rng.random(300)], alpha=0.01) is None  # one slide
    assert fit_tumour_tile_rule([rng.random(10), rng.random(10)], alpha=0.01) is None  # 20 tiles
    assert fit_tumour_tile_rule([np.array([]), rng.random(300)], alpha=0.01) is None


def test_rule_round_trips(rule: TumourTileRule) -> None:
    assert TumourTileRule.from_dict(rule.to_dict()) == rule
    assert TumourTileRule.from_dict(None) is None


def test_tiles_next_to_tumour_are_not_tumour_free() -> None:
    """A 5x5 grid (stride = footprint = 100 px) with tumour in the centre tile."""
    ys, xs = np.mgrid[0:5, 0:5]
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1) * 100
    in_tumour = np.zeros(25, bool)
    in_tumour[12] = True
    free = tumour_free_tiles(coords, in_tumour, 100)
    grid = free.reshape(5, 5)
    assert not grid[1:4, 1:4].any()  # the centre and its 8 neighbours
    assert grid[0].all() and grid[4].all() and grid[:, 0].all() and grid[:, 4].all()
    no_tumour = tumour_free_tiles(coords, np.zeros(25, bool), 100)
    assert no_tumour.all()
