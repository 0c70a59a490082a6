"""Tile-level outlier shares: sharp slide checks from per-tile ranges of the reference tiles."""

from __future__ import annotations

import numpy as np

from histo_net.features.ood import MAX_TILE_OUTLIER_SHARE, fit_domain_reference
from histo_net.features.qc import QC_FEATURE_NAMES
from histo_net.features.tile_outliers import fit_tile_ranges, outside_share, smoothed_share

COLS = {name: i for i, name in enumerate(QC_FEATURE_NAMES)}


def _qc(rng: np.random.Generator, n: int, eosin_shift: float = 0.0, blur: float = 1.0) -> np.ndarray:
    q = np.zeros((n, len(QC_FEATURE_NAMES)))
    q[:, COLS["blur_laplacian_var"]] = rng.lognormal(np.log(300.0 * blur), 0.3, n)
    for name, mean in (("od_r", 0.4), ("od_g", 0.8), ("od_b", 0.5), ("haematoxylin", 0.4),
                       ("eosin", 0.2), ("dab", 0.5)):
        q[:, COLS[name]] = rng.normal(mean, 0.05, n)
    q[:, COLS["eosin"]] += eosin_shift
    q[:, COLS["tissue_pixel_fraction"]] = 0.9
    return q


def test_smoothed_share_stays_inside_zero_one() -> None:
    assert 0 < smoothed_share(np.zeros(10, bool)) < 0.05
    assert 0.95 < smoothed_share(np.ones(10, bool)) < 1
    assert np.isnan(smoothed_share(np.zeros(0, bool)))


def test_ranges_from_pooled_tiles_and_the_share_outside() -> None:
    rng = np.random.default_rng(0)
    ref = [_qc(rng, 400) for _ in range(4)]
    ranges = fit_tile_ranges(ref, COLS, ["eosin", "od_r"])
    lo, hi = ranges["eosin"]
    assert 0.05 < lo < 0.1 and 0.3 < hi < 0.35
    assert outside_share(_qc(rng, 300), COLS, ranges) < 0.05
    assert outside_share(_qc(rng, 300, eosin_shift=-0.8), COLS, ranges) > 0.95
    assert np.isnan(outside_share(_qc(rng, 5), COLS, {}))


def test_few_reference_slides_still_flag_a_restained_or_blurred_slide() -> None:
    """Six reference slides: slide-median limits are wide, the tile-share checks are not."""
    from histo_net.features.ood import check_slide

    rng = np.random.default_rng(1)
    names = ["non_tumour", "a", "b"]
    slides = []
    for _ in range(6):
        n = 200
        slides.append((rng.normal(size=(n, 16)).astype(np.float32), rng.dirichlet(np.ones(3), n), _qc(rng, n)))
    ref = fit_domain_reference(slides, tile_class_names=names, tile_area=0.004, in_bank=[True] * 6,
                               null_tumour_probs=None, blur_threshold=100.0)
    assert ref.limits["stain_outlier_fraction:max"].limit <= MAX_TILE_OUTLIER_SHARE
    assert ref.in_sample_flag_rate["image"] == 0.0

    def failed(qc: np.ndarray) -> set[str]:
        n = len(qc)
        _, checks = check_slide(ref, rng.normal(size=(n, 16)), rng.dirichlet(np.ones(3), n), qc,
                                tile_class_names=names, tile_area=0.004)
        return {c.name for c in checks if not c.passed}

    assert not {"stain_outlier_fraction:max", "blurred_fraction:max"} & failed(_qc(rng, 200))
    assert "stain_outlier_fraction:max" in failed(_qc(rng, 200, eosin_shift=-0.8))
    assert "blurred_fraction:max" in failed(_qc(rng, 200, blur=0.05))
    # real tissue scanned sharp against drawn training slides: more fine texture than any of them
    assert "sharper_fraction:max" in failed(_qc(rng, 200, blur=20.0))
    assert "sharper_fraction:max" not in failed(_qc(rng, 200, blur=0.05))

    back = type(ref).from_dict(ref.to_dict())
    assert back.tile_stain_range == ref.tile_stain_range
