"""Hard by construction (in memory): at ``standard`` the colour statistics of tumour tiles do
not tell the top-level label; at ``easy`` simple statistics do."""

from __future__ import annotations

import numpy as np

from tests.synth_helpers import colour_features, grouped_cv_auroc, subtype_tiles, texture_features


def test_standard_has_no_colour_shortcut() -> None:
    tiles, label, _, groups = subtype_tiles(n_slides_per_subtype=6, tiles_per_slide=2, difficulty="standard",
                                            seed=3)
    colour = np.stack([colour_features(t) for t in tiles])
    auroc = grouped_cv_auroc(colour, label, groups)
    assert auroc <= 0.65, f"colour alone tells the label (AUROC {auroc:.2f})"


def test_easy_is_separable() -> None:
    tiles, label, _, groups = subtype_tiles(n_slides_per_subtype=2, tiles_per_slide=2, difficulty="easy", seed=4)
    feats = np.stack([np.concatenate([colour_features(t), texture_features(t)]) for t in tiles])
    auroc = grouped_cv_auroc(feats, label, groups, folds=3)
    assert auroc >= 0.85, f"easy cohort not separable by simple statistics (AUROC {auroc:.2f})"
