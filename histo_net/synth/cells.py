"""Jittered-lattice cells: one candidate nucleus per lattice cell, evaluated per pixel;
and large-scale Voronoi cells (nests, rosettes, vessels) evaluated at arbitrary points.

A cell's centre and attributes are hashed from (seed, cell index), so any tile can
render the nuclei of neighbouring cells too: nuclei crossing tile borders stay whole.
All lengths are micrometres; pixel grids are given as 1-D centre coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histo_net.synth.noise import hash_uniform


@dataclass(frozen=True)
class CellGrid:
    """Lattice cells covering a pixel grid plus a one-cell margin.

    ``cx, cy``: (ny, nx) float64 centres in um; ``ix0, iy0``: global index of [0, 0];
    ``pix_ix`` (W,), ``pix_iy`` (H,): local cell index of each pixel column / row.
    """

    seed: int
    spacing_um: float
    ix0: int
    iy0: int
    cx: np.ndarray
    cy: np.ndarray
    pix_ix: np.ndarray
    pix_iy: np.ndarray

    def rand(self, k: int) -> np.ndarray:
        """Per-cell uniform [0, 1) attribute number ``k``: (ny, nx) float64."""
        ny, nx = self.cx.shape
        iy = np.arange(self.iy0, self.iy0 + ny)[:, None]
        ix = np.arange(self.ix0, self.ix0 + nx)[None, :]
        return hash_uniform(self.seed, iy, ix, 100 + k)

    def normal(self, k: int) -> np.ndarray:
        """Per-cell approximately standard-normal attribute (sum of uniforms), (ny, nx)."""
        return (self.rand(k) + self.rand(k + 1000) + self.rand(k + 2000) - 1.5) * 2.0


def make_grid(xs_um: np.ndarray, ys_um: np.ndarray, spacing_um: float, jitter: float,
              seed: int) -> CellGrid:
    """Lattice of pitch ``spacing_um`` with centres jittered by ``jitter`` x pitch (0..1)."""
    gx = np.floor(np.asarray(xs_um) / spacing_um).astype(np.int64)
    gy = np.floor(np.asarray(ys_um) / spacing_um).astype(np.int64)
    ix0, iy0 = int(gx.min()) - 1, int(gy.min()) - 1
    ix = np.arange(ix0, int(gx.max()) + 2)[None, :]
    iy = np.arange(iy0, int(gy.max()) + 2)[:, None]
    jx = hash_uniform(seed, iy, ix, 1) - 0.5
    jy = hash_uniform(seed, iy, ix, 2) - 0.5
    cx = (ix + 0.5 + jitter * jx) * spacing_um
    cy = (iy + 0.5 + jitter * jy) * spacing_um
    return CellGrid(seed, spacing_um, ix0, iy0, cx, cy, gx - ix0, gy - iy0)


_OFFSETS = tuple((oy, ox) for oy in (-1, 0, 1) for ox in (-1, 0, 1))


def nearest_two(grid: CellGrid, xs_um: np.ndarray, ys_um: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: distance to nearest and second-nearest centre (um), and the owner cell's
    local (iy, ix). Shapes (H, W); float32 distances, int64 indices."""
    h, w = len(ys_um), len(xs_um)
    q1 = np.full((h, w), np.inf, np.float32)  # squared distances
    q2 = np.full((h, w), np.inf, np.float32)
    own = np.zeros((h, w), np.int8)
    xs32, ys32 = np.asarray(xs_um, np.float32), np.asarray(ys_um, np.float32)
    cx32, cy32 = grid.cx.astype(np.float32), grid.cy.astype(np.float32)
    for k, (oy, ox) in enumerate(_OFFSETS):
        ry = (grid.pix_iy + oy)[:, None]
        rx = (grid.pix_ix + ox)[None, :]
        dx = xs32[None, :] - cx32[ry, rx]
        dy = ys32[:, None] - cy32[ry, rx]
        q = dx * dx + dy * dy
        closer = q < q1
        q2 = np.where(closer, q1, np.minimum(q2, q))
        q1 = np.where(closer, q, q1)
        own[closer] = k
    off = np.asarray(_OFFSETS, np.int64)[own]  # (H, W, 2) winning offsets
    oy_own = grid.pix_iy[:, None] + off[..., 0]
    ox_own = grid.pix_ix[None, :] + off[..., 1]
    return np.sqrt(q1), np.sqrt(q2), oy_own, ox_own


def ellipse_rho(grid: CellGrid, xs_um: np.ndarray, ys_um: np.ndarray, occupied: np.ndarray,
                a_um: np.ndarray, b_um: np.ndarray, theta: np.ndarray,
                wobble: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smallest normalised elliptical radius over all nuclei touching the pixel grid.

    ``occupied``, ``a_um``, ``b_um``, ``theta`` are (ny, nx) per-cell arrays; ``xs_um``,
    ``ys_um`` a uniform pixel grid; ``wobble`` (H, W) optional outline roughness.
    Returns rho (H, W) float32 (inf where no nucleus; < 1 inside one) and the local
    (iy, ix) of that nucleus' cell. Loops over nuclei (not pixels), each on its own box.
    """
    h, w = len(ys_um), len(xs_um)
    rho = np.full((h, w), np.inf, np.float32)
    own_y = np.zeros((h, w), np.int64)
    own_x = np.zeros((h, w), np.int64)
    step = float(xs_um[1] - xs_um[0]) if w > 1 else 1.0
    x_first, y_first = float(xs_um[0]), float(ys_um[0])
    iy_all, ix_all = np.nonzero(occupied)
    if len(iy_all) == 0:
        return rho, own_y, own_x
    cxs, cys = grid.cx[iy_all, ix_all], grid.cy[iy_all, ix_all]
    aa, bb, tt = a_um[iy_all, ix_all], b_um[iy_all, ix_all], theta[iy_all, ix_all]
    reach = np.maximum(aa, bb) * 1.25 + step
    c0 = np.maximum(np.floor((cxs - reach - x_first) / step).astype(np.int64), 0)
    c1 = np.minimum(np.ceil((cxs + reach - x_first) / step).astype(np.int64) + 1, w)
    r0 = np.maximum(np.floor((cys - reach - y_first) / step).astype(np.int64), 0)
    r1 = np.minimum(np.ceil((cys + reach - y_first) / step).astype(np.int64) + 1, h)
    cos_t, sin_t = np.cos(tt), np.sin(tt)
    for k in np.nonzero((c1 > c0) & (r1 > r0))[0]:
        sx, sy = slice(c0[k], c1[k]), slice(r0[k], r1[k])
        dx = (xs_um[sx] - cxs[k])[None, :]
        dy = (ys_um[sy] - cys[k])[:, None]
        u = (dx * cos_t[k] + dy * sin_t[k]) / aa[k]
        v = (dy * cos_t[k] - dx * sin_t[k]) / bb[k]
        r = np.sqrt(u * u + v * v).astype(np.float32)
        block = rho[sy, sx]
        better = r < block
        block[better] = r[better]
        own_y[sy, sx][better] = iy_all[k]
        own_x[sy, sx][better] = ix_all[k]
    if wobble is not None:
        rho = rho * (1.0 + wobble)
    return rho, own_y, own_x


def nucleus_profile(rho: np.ndarray, edge: float = 0.12, rim: float = 0.25) -> np.ndarray:
    """Nuclear stain profile from rho: ~1 inside with a darker membrane rim, soft edge, 0 outside."""
    inside = np.clip((1.0 - rho) / edge + 0.5, 0.0, 1.0)
    membrane = 1.0 + rim * np.exp(-((rho - 0.9) / 0.1) ** 2)
    return (inside * membrane).astype(np.float32)


def lattice_centre(ix: np.ndarray, iy: np.ndarray, spacing: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Jittered centre (um) of lattice cell (ix, iy): a pure function of seed and cell."""
    cx = (ix + 0.5 + 0.8 * (hash_uniform(seed, iy, ix, 1) - 0.5)) * spacing
    cy = (iy + 0.5 + 0.8 * (hash_uniform(seed, iy, ix, 2) - 0.5)) * spacing
    return cx, cy


def _keep_two_nearest(x: np.ndarray, y: np.ndarray, cx: np.ndarray | float, cy: np.ndarray | float,
                      d1: np.ndarray, d2: np.ndarray, ox_c: np.ndarray, oy_c: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fold candidate centre(s) (cx, cy) into the running nearest / second-nearest distances."""
    d = np.hypot(x - cx, y - cy)
    closer = d < d1
    d2 = np.where(closer, d1, np.minimum(d2, d))
    d1 = np.where(closer, d, d1)
    return d1, d2, np.where(closer, cx, ox_c), np.where(closer, cy, oy_c)


def voronoi_points(x: np.ndarray, y: np.ndarray, spacing: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Large-scale Voronoi at points x, y (um, same shape): d1, d2 (um), owner centre x, y.

    Candidates are the centres of each point's 3x3 lattice neighbourhood, so the value at a
    point never depends on which other points are evaluated with it.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d1 = np.full(x.shape, np.inf)
    d2 = np.full(x.shape, np.inf)
    ox_c, oy_c = np.zeros(x.shape), np.zeros(x.shape)
    if x.size == 0:
        return d1, d2, ox_c, oy_c
    gx, gy = np.floor(x / spacing).astype(np.int64), np.floor(y / spacing).astype(np.int64)
    ix0, iy0 = int(gx.min()) - 1, int(gy.min()) - 1
    nx, ny = int(gx.max()) + 2 - ix0, int(gy.max()) + 2 - iy0
    if nx * ny <= 4 * x.size:  # hash the lattice once, then gather each point's 3x3 neighbours
        ixx, iyy = np.meshgrid(np.arange(ix0, ix0 + nx), np.arange(iy0, iy0 + ny))
        lcx, lcy = lattice_centre(ixx, iyy, spacing, seed)
        for oy, ox in _OFFSETS:
            jy, jx = gy + oy - iy0, gx + ox - ix0
            d1, d2, ox_c, oy_c = _keep_two_nearest(x, y, lcx[jy, jx], lcy[jy, jx], d1, d2, ox_c, oy_c)
        return d1, d2, ox_c, oy_c
    for oy, ox in _OFFSETS:
        cx, cy = lattice_centre(gx + ox, gy + oy, spacing, seed)
        d1, d2, ox_c, oy_c = _keep_two_nearest(x, y, cx, cy, d1, d2, ox_c, oy_c)
    return d1, d2, ox_c, oy_c


class CoarseGrid:
    """Every ``step``-th point of a uniform pixel grid (plus a margin), with bilinear
    upsampling back to the full grid: for smooth quantities (distances, noise) that are
    expensive per pixel. ``x, y``: (ny, nx) um coordinates of the coarse points."""

    def __init__(self, xs_um: np.ndarray, ys_um: np.ndarray, step: int = 3) -> None:
        xs_um, ys_um = np.asarray(xs_um, np.float64), np.asarray(ys_um, np.float64)
        dx = float(xs_um[1] - xs_um[0]) if len(xs_um) > 1 else 1.0
        cx = xs_um[0] + np.arange(-(-len(xs_um) // step) + 2) * dx * step
        cy = ys_um[0] + np.arange(-(-len(ys_um) // step) + 2) * dx * step
        self.x, self.y = np.meshgrid(cx, cy)
        self._iy, self._fy = self._axis(ys_um, cy)
        self._ix, self._fx = self._axis(xs_um, cx)

    @staticmethod
    def _axis(fine: np.ndarray, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.clip((fine - coarse[0]) / (coarse[1] - coarse[0]), 0, len(coarse) - 1.000001)
        i0 = np.floor(pos).astype(np.int64)
        return i0, pos - i0

    def up(self, v: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of coarse values ``v`` (ny, nx) onto the full (H, W) grid."""
        iy, ix = self._iy, self._ix
        fx, fy = self._fx[None, :], self._fy[:, None]
        top = v[iy][:, ix] * (1 - fx) + v[iy][:, ix + 1] * fx
        bot = v[iy + 1][:, ix] * (1 - fx) + v[iy + 1][:, ix + 1] * fx
        return top * (1 - fy) + bot * fy
