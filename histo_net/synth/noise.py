"""Deterministic, coordinate-based randomness: integer hashing and value noise.

Every random quantity of a slide is a pure function of (seed, global position), so
tiles rendered independently agree at their borders and output is reproducible.
Coordinates are in micrometres so content does not depend on the render mpp.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)
_S11 = np.uint64(11)


def _mix(h: np.ndarray) -> np.ndarray:
    """murmur3 finaliser on uint64 arrays (wrapping arithmetic)."""
    h = h ^ (h >> _S33)
    h = h * _M1
    h = h ^ (h >> _S33)
    h = h * _M2
    return h ^ (h >> _S33)


def hash_uniform(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) (float64, broadcast shape of ``keys``) from integer keys."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) * _GOLD + np.uint64(1))
        for key in keys:
            k = np.asarray(key, dtype=np.int64).view(np.uint64)
            h = _mix(h ^ (k * _GOLD + np.uint64(0x632BE59BD9B4E019)))
    return (h >> _S11).astype(np.float64) * (1.0 / (1 << 53))


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def noise_grid(xs_um: np.ndarray, ys_um: np.ndarray, scale_um: float, seed: int) -> np.ndarray:
    """Value noise in [0, 1) on the grid ys x xs -> (len(ys), len(xs)) float32; feature size ``scale_um``."""
    gx, gy = np.asarray(xs_um) / scale_um, np.asarray(ys_um) / scale_um
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = _smooth(gx - ix), _smooth(gy - iy)
    x_lo, y_lo = ix.min(), iy.min()
    ux = np.arange(x_lo, ix.max() + 2)
    uy = np.arange(y_lo, iy.max() + 2)
    lattice = hash_uniform(seed, uy[:, None], ux[None, :])  # (ny, nx)
    jx, jy = ix - x_lo, iy - y_lo
    lattice = lattice.astype(np.float32)
    fx32, fy32 = fx.astype(np.float32)[None, :], fy.astype(np.float32)[:, None]
    rows = lattice[:, jx] * (1 - fx32) + lattice[:, jx + 1] * fx32  # (ny, W): separable bilinear
    return rows[jy] * (1 - fy32) + rows[jy + 1] * fy32


def noise_points(x_um: np.ndarray, y_um: np.ndarray, scale_um: float, seed: int) -> np.ndarray:
    """Value noise in [0, 1) at arbitrary points (same shape as ``x_um``), float32."""
    gx, gy = np.asarray(x_um) / scale_um, np.asarray(y_um) / scale_um
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = _smooth(gx - ix), _smooth(gy - iy)
    if ix.size > 16:
        x_lo, y_lo = int(ix.min()), int(iy.min())
        nx, ny = int(ix.max()) - x_lo + 2, int(iy.max()) - y_lo + 2
        if nx * ny <= 2 * ix.size:  # dense points: hash the lattice once and gather
            lattice = hash_uniform(seed, np.arange(y_lo, y_lo + ny)[:, None], np.arange(x_lo, x_lo + nx)[None, :])
            jx, jy = ix - x_lo, iy - y_lo
            v00, v01 = lattice[jy, jx], lattice[jy, jx + 1]
            v10, v11 = lattice[jy + 1, jx], lattice[jy + 1, jx + 1]
            top = v00 * (1 - fx) + v01 * fx
            bot = v10 * (1 - fx) + v11 * fx
            return (top * (1 - fy) + bot * fy).astype(np.float32)
    v00 = hash_uniform(seed, iy, ix)
    v01 = hash_uniform(seed, iy, ix + 1)
    v10 = hash_uniform(seed, iy + 1, ix)
    v11 = hash_uniform(seed, iy + 1, ix + 1)
    top = v00 * (1 - fx) + v01 * fx
    bot = v10 * (1 - fx) + v11 * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


@lru_cache(maxsize=1)
def _noise_quantiles() -> np.ndarray:
    """(101,) quantiles of value noise (computed once, on first use)."""
    pts = np.arange(200_000, dtype=np.float64)
    v = noise_points(pts * 0.6180339887 % 997.0, pts * 0.7548776662 % 991.0, 1.0, 12345)
    return np.quantile(v.astype(np.float64), np.linspace(0, 1, 101))


def uniform_noise_points(x_um: np.ndarray, y_um: np.ndarray, scale_um: float, seed: int) -> np.ndarray:
    """Value noise mapped through its own distribution function: about uniform on [0, 1],
    so ``field < share`` covers about ``share`` of the area. Same shape as ``x_um``, float32."""
    v = noise_points(x_um, y_um, scale_um, seed)
    return np.interp(v, _noise_quantiles(), np.linspace(0.0, 1.0, 101)).astype(np.float32)
