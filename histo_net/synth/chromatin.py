"""Chromatin patterns: per-pixel haematoxylin multipliers (mean about 1) inside nuclei.

All are coordinate-based value noise, so they are continuous across tile borders.
``contrast`` scales the deviation from 1 (a per-slide draw).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from histo_net.errors import ConfigError
from histo_net.synth.noise import noise_grid


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _raw_texture(kind: str, xs_um: np.ndarray, ys_um: np.ndarray, seed: int) -> np.ndarray:
    """Un-normalised texture of ``kind`` on the grid ys x xs (see ``chromatin_texture``)."""
    if kind == "salt_pepper":
        g = noise_grid(xs_um, ys_um, 0.75, seed)
        tex = 0.55 + 1.0 * _smoothstep((g - 0.45) / 0.2)
    elif kind == "fine_granular":
        g = noise_grid(xs_um, ys_um, 0.5, seed)
        tex = 0.8 + 0.45 * g
    elif kind == "dusty":
        g = noise_grid(xs_um, ys_um, 0.4, seed)
        tex = 0.88 + 0.28 * g
    elif kind == "coarse_clumped":
        g = noise_grid(xs_um, ys_um, 1.4, seed)
        f = noise_grid(xs_um, ys_um, 0.6, seed + 1)
        tex = 0.45 + 1.0 * _smoothstep((g - 0.3) / 0.45) + 0.2 * f
    elif kind == "powdery":
        g = noise_grid(xs_um, ys_um, 0.45, seed)
        tex = 0.9 + 0.22 * g
    elif kind == "coarse":
        g = noise_grid(xs_um, ys_um, 0.85, seed)
        f = noise_grid(xs_um, ys_um, 0.45, seed + 1)
        tex = 0.5 + 0.75 * g * g + 0.5 * f
    else:
        raise ConfigError(f"chromatin {kind!r}: unknown pattern")
    return tex


@cache
def _expected_mean(kind: str) -> float:
    """Mean of ``_raw_texture(kind)`` over a large area (computed once per kind, on first use)."""
    grid = np.arange(400) * 0.37 + 0.1
    return float(_raw_texture(kind, grid, grid, 999).mean())


def chromatin_texture(kind: str, xs_um: np.ndarray, ys_um: np.ndarray, seed: int,
                      contrast: float = 1.0) -> np.ndarray:
    """(len(ys), len(xs)) float32 multiplier (mean about 1) of the nuclear stain for ``kind``.

    - ``salt_pepper``: discrete dark granules (~0.8 um) on a paler nucleoplasm (NET);
    - ``fine_granular``: dense fine granules, little contrast (small-cell carcinoma);
    - ``dusty``: very fine even dust (Merkel cell);
    - ``coarse_clumped``: irregular clumps (~1.5 um) and clear patches (lymphoma);
    - ``powdery``: fine, pale and even (Ewing);
    - ``coarse``: moderately coarse granules (rhabdomyosarcoma).
    """
    tex = _raw_texture(kind, xs_um, ys_um, seed) / _expected_mean(kind)
    return (1.0 + contrast * (tex - 1.0)).astype(np.float32)
