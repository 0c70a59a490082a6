"""Helpers for the synthetic-cohort tests: tile features and grouped-CV AUROC."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import laplace, uniform_filter


def colour_features(tile: np.ndarray) -> np.ndarray:
    """(6,) per-channel RGB mean and standard deviation of a (H, W, 3) uint8 tile."""
    flat = tile.reshape(-1, 3).astype(np.float64)
    return np.concatenate([flat.mean(0), flat.std(0)])


def texture_features(tile: np.ndarray) -> np.ndarray:
    """(3,) colour-blind texture statistics: Laplacian energy and local-contrast at two scales,
    each normalised by the grey-level std so stain strength cancels out."""
    grey = tile.astype(np.float64).mean(axis=2)
    sd = grey.std() + 1e-6
    lap = np.abs(laplace(grey)).mean() / sd
    feats = [lap]
    for size in (5, 15):
        m = uniform_filter(grey, size)
        local = np.sqrt(np.maximum(uniform_filter(grey**2, size) - m**2, 0)).mean() / sd
        feats.append(local)
    return np.array(feats)


def grouped_cv_auroc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 4) -> float:
    """AUROC of a standardised logistic regression, cross-validated by slide groups."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    proba = cross_val_predict(model, x, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))
