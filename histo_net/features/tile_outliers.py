"""Tile-level outlier shares: slide checks that keep their power with few reference slides.

A slide-median limit fitted on six reference slides is (rightly) wide; a per-tile range fitted
on the thousands of reference tiles is not. Each statistic here is the share of a slide's tiles
outside a range learnt from the reference tiles, smoothed as ``(k + 0.5) / (n + 1)`` so that
it never reaches 0 or 1 and its logit stays finite for the slide-level prediction limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: per-descriptor central range of reference tiles: [TAIL, 1 - TAIL] quantiles
TILE_RANGE_TAIL = 0.005


def smoothed_fraction(fraction: float, n: int) -> float:
    """``(k + 0.5) / (n + 1)`` for a raw share ``fraction = k / n``; NaN for n = 0 or NaN."""
    if not n or not np.isfinite(fraction):
        return float("nan")
    return float((fraction * n + 0.5) / (n + 1))


def smoothed_share(outside: npt.ArrayLike) -> float:
    """:func:`smoothed_fraction` of a (N,) bool mask; NaN for N = 0."""
    mask = np.asarray(outside, dtype=bool).ravel()
    return smoothed_fraction(float(mask.mean()) if mask.size else float("nan"), int(mask.size))


def fit_tile_ranges(qc: Sequence[np.ndarray], columns: dict[str, int], names: Sequence[str],
                    tail: float = TILE_RANGE_TAIL) -> dict[str, tuple[float, float]]:
    """Per descriptor ``name``: the [tail, 1 - tail] quantiles over every reference tile.

    ``qc``: per reference slide (N_i,K) QC rows; ``columns``: descriptor name -> column.
    """
    rows = [np.asarray(q, dtype=np.float64) for q in qc if len(q)]
    if not rows:
        return {}
    pooled = np.concatenate(rows)
    out: dict[str, tuple[float, float]] = {}
    for name in names:
        if name in columns:
            v = pooled[:, columns[name]]
            v = v[np.isfinite(v)]
            if v.size:
                out[name] = (float(np.quantile(v, tail)), float(np.quantile(v, 1.0 - tail)))
    return out


def outside_share(qc: npt.ArrayLike, columns: dict[str, int],
                  ranges: dict[str, tuple[float, float]]) -> float:
    """Smoothed share of (N,K) QC rows with any ranged descriptor outside its range (NaN: no ranges)."""
    q = np.asarray(qc, dtype=np.float64)
    usable = [(columns[n], lo, hi) for n, (lo, hi) in ranges.items() if n in columns]
    if not usable or q.ndim != 2 or not len(q):
        return float("nan")
    outside = np.zeros(len(q), dtype=bool)
    for col, lo, hi in usable:
        outside |= (q[:, col] < lo) | (q[:, col] > hi)
    return smoothed_share(outside)
