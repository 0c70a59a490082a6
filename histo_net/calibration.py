"""Temperature scaling, decision threshold and the "indeterminate" band, all fit on validation."""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: half-width of the default band used when validation cannot support a data-driven one
DEFAULT_HALF_BAND = 0.05


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 200) -> float:
    """Temperature ``T > 0`` minimising NLL of ``softmax(logits / T)``; LBFGS on ``log T``.

    ``logits`` (N,C) float, ``labels`` (N,) int. Returns 1.0 for empty input; the
    result is clamped to [0.05, 20].
    """
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if logits_t.numel() == 0 or logits_t.ndim != 2:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature):
        logger.warning("temperature fit diverged; using T=1")
        return 1.0
    return float(np.clip(temperature, 0.05, 20.0))


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` as float64 ``(N,C)`` (or ``(C,)`` for one slide)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def choose_threshold(pos_probs: np.ndarray, labels01: np.ndarray) -> float:
    """Threshold on the positive-class probability maximising Youden's J (= balanced accuracy).

    Predict positive when ``p >= threshold``. Candidates are midpoints between
    sorted distinct probabilities; ties keep the one closest to 0.5. Returns 0.5
    when only one class is present.
    """
    p = np.asarray(pos_probs, dtype=np.float64).ravel()
    y = np.asarray(labels01).astype(bool).ravel()
    if y.all() or (~y).all() or p.size == 0:
        return 0.5
    values = np.unique(p)
    candidates = (
        np.concatenate([[0.5], (values[:-1] + values[1:]) / 2.0])
        if values.size > 1
        else np.array([0.5])
    )
    best_t, best_j = 0.5, -np.inf
    for t in candidates:
        pred = p >= t
        j = pred[y].mean() + (~pred[~y]).mean() - 1.0
        if j > best_j + 1e-12 or (abs(j - best_j) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best_t, best_j = float(t), float(j)
    return best_t


def choose_indeterminate_band(
    pos_probs: np.ndarray,
    labels01: np.ndarray,
    threshold: float,
    *,
    target_precision: float = 0.95,
    min_per_class: int = 5,
) -> tuple[float, float]:
    """``(lo, hi)`` around ``threshold``: slides with ``lo <= p <= hi`` are "indeterminate".

    ``hi`` is the smallest cut >= threshold at which calls ``p > hi`` reach
    ``target_precision`` for the positive class; ``lo`` the largest cut <=
    threshold at which calls ``p < lo`` reach it for the negative class (negative
    predictive value). When validation has fewer than ``min_per_class`` slides of
    either class, or a side never reaches the target, that side falls back to
    ``threshold -/+ DEFAULT_HALF_BAND`` (a narrow default band), clipped to [0, 1].
    """
    p = np.asarray(pos_probs, dtype=np.float64).ravel()
    y = np.asarray(labels01).astype(bool).ravel()
    default_lo = max(0.0, threshold - DEFAULT_HALF_BAND)
    default_hi = min(1.0, threshold + DEFAULT_HALF_BAND)
    if min(int(y.sum()), int((~y).sum())) < min_per_class:
        logger.info(
            "validation too small for a data-driven band; using [%.3f, %.3f]",
            default_lo,
            default_hi,
        )
        return default_lo, default_hi
    hi = default_hi
    for cut in np.concatenate([[threshold], np.unique(p[p >= threshold])]):
        called = p > cut
        if called.any() and y[called].mean() >= target_precision:
            hi = float(cut)
            break
    lo = default_lo
    for cut in np.concatenate([[threshold], np.unique(p[p <= threshold])[::-1]]):
        called = p < cut
        if called.any() and (~y[called]).mean() >= target_precision:
            lo = float(cut)
            break
    return float(min(lo, threshold)), float(max(hi, threshold))
