"""The no-tumour check: more tumour-positive tiles than tumour-free tissue of that size gives?

A tile is *tumour-positive* when the tile classifier's P(tumour) reaches a threshold fitted on
tumour-free tiles of the reference slides (their 99th percentile, at least 0.5). Tumour-free
tissue still produces some positive tiles; how many varies from slide to slide, so the count
of positive tiles in a tumour-free slide of ``n`` tiles is modelled as beta-binomial with the
rate distribution fitted (method of moments) on the reference slides' tumour-free tiles. A
slide has tumour detected when its count reaches the smallest ``k`` that tumour-free tissue
of ``n`` tiles reaches with probability at most ``alpha``.

Why a count and not the mean P(tumour) over tiles (the first rule): a focus of 2% of a slide
barely moves the mean, whose slide-to-slide spread in tumour-free tissue is large, so the mean
rule either missed tumour-free slides or flagged small-focus tumour slides; a count grows with
the slide, so a focus of a few dozen tiles in a large slide is detected however small its share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.spatial import cKDTree

#: the tile threshold is this quantile of P(tumour) over the reference tumour-free tiles ...
NULL_TILE_QUANTILE = 0.99
#: ... but never below this (a positive tile is one the classifier calls tumour)
MIN_TILE_THRESHOLD = 0.5
#: fewest tumour-free reference tiles (and slides) the rule is fitted on
MIN_NULL_TILES = 50
MIN_NULL_SLIDES = 2
#: bounds on the beta precision a + b (upper: practically binomial; lower: very overdispersed)
PRECISION_RANGE = (2.0, 1e4)


@dataclass(frozen=True)
class TumourTileRule:
    """Fitted rule; ``rate_a``/``rate_b`` the beta distribution of the tumour-free positive rate."""

    threshold: float
    rate_a: float
    rate_b: float
    alpha: float
    n_slides: int
    n_tiles: int

    @property
    def null_rate(self) -> float:
        """Mean share of tumour-positive tiles in tumour-free tissue."""
        return float(self.rate_a / (self.rate_a + self.rate_b))

    def min_tiles(self, n_tiles: int) -> int:
        """Fewest positive tiles of ``n_tiles`` that tumour-free tissue reaches with P <= alpha."""
        if n_tiles <= 0:
            return 1
        # isf gives the smallest k with P(K > k) <= alpha, so K >= k + 1 is that rare
        return int(stats.betabinom.isf(self.alpha, int(n_tiles), self.rate_a, self.rate_b)) + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (bundle)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TumourTileRule | None:
        """Inverse of :meth:`to_dict`; None when absent."""
        if not data:
            return None
        return cls(float(data["threshold"]), float(data["rate_a"]), float(data["rate_b"]),
                   float(data["alpha"]), int(data["n_slides"]), int(data["n_tiles"]))


def positive_tiles(p_tumour: npt.ArrayLike, threshold: float) -> int:
    """Number of tiles with P(tumour) >= ``threshold`` in a (N,) array."""
    return int(np.count_nonzero(np.asarray(p_tumour, dtype=np.float64) >= threshold))


def fit_tumour_tile_rule(null_probs: Sequence[npt.ArrayLike], *, alpha: float) -> TumourTileRule | None:
    """Fit on per reference slide (N_i,) P(tumour) of its tumour-free tiles; None when too few."""
    per_slide = [np.asarray(p, dtype=np.float64).ravel() for p in null_probs]
    per_slide = [p[np.isfinite(p)] for p in per_slide]
    per_slide = [p for p in per_slide if p.size]
    n_tiles = sum(p.size for p in per_slide)
    if len(per_slide) < MIN_NULL_SLIDES or n_tiles < MIN_NULL_TILES:
        return None
    threshold = max(MIN_TILE_THRESHOLD, float(np.quantile(np.concatenate(per_slide), NULL_TILE_QUANTILE)))
    k = np.array([positive_tiles(p, threshold) for p in per_slide], dtype=np.float64)
    n = np.array([p.size for p in per_slide], dtype=np.float64)
    mean = float((k.sum() + 0.5) / (n.sum() + 1.0))
    # between-slide variance of the rate beyond binomial sampling noise
    excess = float(np.var(k / n, ddof=1) - np.mean(mean * (1 - mean) / n))
    precision = mean * (1 - mean) / excess - 1.0 if excess > 0 else PRECISION_RANGE[1]
    precision = float(np.clip(precision, *PRECISION_RANGE))
    return TumourTileRule(threshold=threshold, rate_a=mean * precision, rate_b=(1 - mean) * precision,
                          alpha=float(alpha), n_slides=len(per_slide), n_tiles=int(n_tiles))


def tumour_free_tiles(coords_level0: npt.NDArray[np.int64], in_tumour: npt.NDArray[np.bool_],
                      patch_size_level0: int) -> npt.NDArray[np.bool_]:
    """(N,) tiles outside tumour and more than one footprint (centre to centre, Chebyshev) from a tumour tile."""
    inside_mask = np.asarray(in_tumour, dtype=bool)
    free = ~inside_mask
    inside = np.asarray(coords_level0)[inside_mask]
    if len(inside) and free.any():
        tree = cKDTree(inside)
        near = tree.query_ball_point(np.asarray(coords_level0)[free], r=1.5 * patch_size_level0, p=np.inf,
                                     return_length=True)
        free[np.flatnonzero(free)] = np.asarray(near) == 0
    return free
