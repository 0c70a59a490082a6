"""Cross-fitting: out-of-fold MIL logits over train + validation, for calibration.

The MIL head is cheap, so it is retrained on k patient-grouped, label-stratified folds
through the same :func:`histo_net.train.mil.train_mil`; each slide's logits come from the
head that never saw it. Each fold trains for a fixed number of epochs (the main run's best
epoch) and selects on its own training bags, so no held-out slide steers its own fit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from histo_net.train.mil import predict_bags, train_mil

logger = logging.getLogger(__name__)


def patient_folds(labels: Sequence[int], groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    """(S,) int fold per slide: patients never split, labels spread evenly over folds.

    Patients are shuffled (seeded) within their label (a patient's first slide's label) and
    dealt round-robin, continuing across labels.
    """
    labels = list(labels)
    first: dict[str, int] = {}
    for g, y in zip(groups, labels):
        first.setdefault(str(g), int(y))
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    turn = 0
    for y in sorted(set(first.values())):
        patients = sorted(p for p, lab in first.items() if lab == y)
        for p in (patients[i] for i in rng.permutation(len(patients))):
            fold_of[p] = turn % k
            turn += 1
    return np.asarray([fold_of[str(g)] for g in groups], dtype=np.int64)


def cross_fit_logits(bags: Sequence[Tensor], labels: Sequence[int], groups: Sequence[str], *,
                     num_classes: int, folds: int, epochs: int, seed: int, device: torch.device,
                     mil_kwargs: dict[str, Any], lr: float, weight_decay: float, max_bag_size: int,
                     class_weighted: bool) -> np.ndarray:
    """(S,C) float32 out-of-fold logits for ``bags`` (S bags of (N_i,D)).

    ``k = min(folds, number of patients)``; a fold whose training part lacks a class still
    trains (class weights give the absent class 0).
    """
    n = len(bags)
    k = max(2, min(int(folds), len(set(map(str, groups)))))
    fold = patient_folds(labels, groups, k, seed)
    out = np.zeros((n, num_classes), np.float32)
    y = np.asarray(labels, dtype=np.int64)
    for f in range(k):
        held, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        if not len(held) or not len(train):
            continue
        tb, tl = [bags[i] for i in train], [int(y[i]) for i in train]
        model, _ = train_mil(tb, tl, tb, tl, num_classes=num_classes, mil_kwargs=mil_kwargs, epochs=epochs,
                             lr=lr, weight_decay=weight_decay, max_bag_size=max_bag_size,
                             class_weighted=class_weighted, patience=epochs, seed=seed + 1 + f,
                             device=device)
        logits, _ = predict_bags(model, [bags[i] for i in held], device=device)
        out[held] = logits
    logger.info("cross-fitting: %d folds over %d slides", k, n)
    return out
