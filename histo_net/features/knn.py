"""k-nearest-neighbour distances of tile embeddings to a bank of reference tiles (cosine)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def normalise_rows(x: npt.ArrayLike) -> np.ndarray:
    """(N,D) float32 rows scaled to unit L2 norm (zero rows stay zero)."""
    a = np.asarray(x, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-6)


def knn_distance(features: npt.ArrayLike, bank: npt.ArrayLike, k: int,
                 exclude: npt.ArrayLike | None = None, batch: int = 1024) -> np.ndarray:
    """(N,) mean cosine distance of each row of ``features`` to its ``k`` nearest bank rows.

    ``bank`` (M,D) unit rows; ``exclude`` (N,M) bool or None: bank rows not to use per row
    (leave-one-slide-out for reference slides).
    """
    f = normalise_rows(features)
    b = np.asarray(bank, dtype=np.float32)
    out = np.empty(len(f), np.float64)
    k = max(1, min(int(k), len(b)))
    for s in range(0, len(f), batch):
        sim = f[s:s + batch] @ b.T  # (n,M) cosine similarity
        if exclude is not None:
            sim = np.where(np.asarray(exclude)[s:s + batch], -np.inf, sim)
        top = -np.partition(-sim, k - 1, axis=1)[:, :k]  # (n,k) largest similarities
        out[s:s + batch] = np.mean(1.0 - top, axis=1)
    return out


def sample_bank(features: Sequence[np.ndarray], owners: Sequence[int], size: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """(M,D) unit rows sampled evenly from the bank slides and (M,) owner slide index per row."""
    per = max(1, math.ceil(size / max(1, len(owners))))
    rows, owner = [], []
    for i in owners:
        f = np.asarray(features[i], dtype=np.float32)
        take = rng.choice(len(f), size=min(per, len(f)), replace=False) if len(f) else np.zeros(0, int)
        rows.append(normalise_rows(f[np.sort(take)]))
        owner.append(np.full(len(take), i))
    if not rows:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(owner).astype(np.int64)


