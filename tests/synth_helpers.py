"""Helpers for the synthetic-cohort tests: tile features, in-memory tumour tiles, grouped-CV AUROC."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter, laplace, uniform_filter

from histo_net.synth.render import tumour_tile
from histo_net.synth.spec import PRESETS, SlideJob, build_spec
from histo_net.taxonomy import SUBTYPE_LABEL, TUMOUR_SUBTYPES


def colour_features(tile: np.ndarray) -> np.ndarray:
    """(6,) per-channel RGB mean and standard deviation of a (H, W, 3) uint8 tile."""
    flat = tile.reshape(-1, 3).astype(np.float64)
    return np.concatenate([flat.mean(0), flat.std(0)])


def texture_features(tile: np.ndarray) -> np.ndarray:
    """(7,) colour-blind texture statistics: Laplacian energy, local contrast at two scales and
    four band-pass energies, each normalised by the grey-level std so stain strength cancels."""
    grey = tile.astype(np.float64).mean(axis=2)
    sd = grey.std() + 1e-6
    feats = [np.abs(laplace(grey)).mean() / sd]
    for size in (5, 15):
        m = uniform_filter(grey, size)
        feats.append(np.sqrt(np.maximum(uniform_filter(grey**2, size) - m**2, 0)).mean() / sd)
    blurred = [gaussian_filter(grey, s) for s in (0.7, 1.4, 2.8, 5.6, 11.0)]
    feats.extend(np.log(np.mean((a - b) ** 2) + 1e-6) - 2 * np.log(sd) for a, b in itertools.pairwise(blurred))
    return np.array(feats)


def subtype_tiles(n_slides_per_subtype: int, tiles_per_slide: int, difficulty: str = "standard",
                  seed: int = 0, size_px: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tumour tiles (0.5 um/px) from slides of every subtype, each slide with its own draws.

    Returns (tiles (N, size, size, 3) uint8, label (N,) 1 = neuroendocrine, subtype index (N,),
    slide group (N,)).
    """
    tiles, labels, subs, groups = [], [], [], []
    base = SlideJob("t", "P", TUMOUR_SUBTYPES[0], 0, 4096, 4096, PRESETS["small"],
                    PRESETS["small"].stain_jitter, "svs", difficulty)
    for si, subtype in enumerate(TUMOUR_SUBTYPES):
        for k in range(n_slides_per_subtype):
            slide_seed = seed * 10_000 + si * 100 + k
            spec = build_spec(replace(base, subtype=subtype, seed=slide_seed))
            rng = np.random.default_rng(slide_seed)
            for _ in range(tiles_per_slide):
                x0, y0 = (int(v) for v in rng.integers(400, 12_000, 2))
                tiles.append(tumour_tile(spec.style, spec.stain, x0, y0, size_px=size_px))
                labels.append(int(SUBTYPE_LABEL[subtype] == "neuroendocrine"))
                subs.append(si)
                groups.append(slide_seed)
    return np.stack(tiles), np.array(labels), np.array(subs), np.array(groups)


def grouped_cv_auroc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 4) -> float:
    """AUROC (binary, or macro one-vs-rest for > 2 classes) of a standardised logistic
    regression, cross-validated by slide groups."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    proba = cross_val_predict(model, x, y, groups=groups, cv=cv, method="predict_proba")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr"))
