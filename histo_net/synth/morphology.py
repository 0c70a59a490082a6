"""Tumour morphology, drawn nucleus by nucleus into H and E concentration maps.

Neuroendocrine: nests / trabeculae / rosettes of uniform round nuclei with stippled
("salt and pepper") chromatin and a pale eosinophilic cytoplasm rim, separated by thin
fibrovascular septa. Other small round cell tumours (one sub-pattern per slide):
lymphoma-like discohesive sheets, small-cell-like moulding with crush streaks, and
Ewing-like sheets with clear cytoplasm; all hyperchromatic, variable, with mitoses and
apoptotic bodies and no nesting. Per-pattern gains equalise the mean stain so the
classes differ by architecture and texture, not colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from histo_net.errors import ConfigError
from histo_net.synth.cells import ellipse_rho, make_grid, nearest_two, nucleus_profile
from histo_net.synth.noise import hash_uniform, noise_grid, noise_points

PointTest = Callable[[np.ndarray, np.ndarray], np.ndarray]

NE_PATTERNS: tuple[str, ...] = ("nested", "trabecular")
OTHER_PATTERNS: tuple[str, ...] = ("lymphoma", "small_cell", "ewing")
ALL_PATTERNS: tuple[str, ...] = NE_PATTERNS + OTHER_PATTERNS

#: (h_scale, h_offset, e_scale, e_offset) per pattern: an affine tone map of the stain
#: concentrations calibrated (``histo_net.synth.calibrate``) so every pattern has the same
#: mean and spread of haematoxylin and eosin; classes differ by morphology, not colour.
PATTERN_TONE: dict[str, tuple[float, float, float, float]] = {
    "nested": (1.0, 0.0, 1.0, 0.0), "trabecular": (1.0003, 0.0, 1.0008, 0.0),
    "lymphoma": (0.6469, 0.0035, 1.2671, -0.0445), "small_cell": (0.7727, -0.1456, 1.9913, -0.5951),
    "ewing": (1.3149, -0.594, 1.5257, -0.0744),
}


def pattern_families(n_classes: int) -> list[tuple[str, ...]]:
    """Sub-patterns available to each class index: class 0 is neuroendocrine."""
    if n_classes == 2:
        return [NE_PATTERNS, OTHER_PATTERNS]
    if n_classes == 3:
        return [NE_PATTERNS, ("lymphoma",), ("small_cell", "ewing")]
    if n_classes == 4:
        return [NE_PATTERNS, ("lymphoma",), ("small_cell",), ("ewing",)]
    raise ConfigError(f"classes: {n_classes} given, the generator supports 2 to 4")


@dataclass(frozen=True)
class TumourStyle:
    """Per-slide tumour parameters (pattern plus small per-slide variation)."""

    pattern: str
    seed: int
    scale: float = 1.0  # multiplies cell size
    orientation: float = 0.0  # radians, ribbons / flow direction


def _texture(xs: np.ndarray, ys: np.ndarray, seed: int, kind: str) -> np.ndarray:
    """Chromatin texture multiplier (H, W) float32 around 1."""
    if kind == "stippled":  # fine salt-and-pepper granules
        fine = noise_grid(xs, ys, 0.55, seed)
        return (0.55 + 1.1 * (fine > 0.55)).astype(np.float32)
    if kind == "coarse":  # clumped, hyperchromatic
        clump = noise_grid(xs, ys, 1.3, seed)
        return (0.75 + 0.6 * clump ** 2 * 2).astype(np.float32)
    fine = noise_grid(xs, ys, 0.8, seed)  # "fine": even, powdery
    return (0.85 + 0.3 * fine).astype(np.float32)


def _lattice_centre(ix: np.ndarray, iy: np.ndarray, spacing: float, seed: int
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


def _voronoi_points(x: np.ndarray, y: np.ndarray, spacing: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Large-scale Voronoi at points x, y (um, same shape): d1, d2 (um), owner centre x, y.

    Candidate centres are those of the lattice cells around the points' bounding box,
    so the cost is (number of points) x (a few candidates) whatever the coordinates.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ix = np.arange(int(np.floor(x.min() / spacing)) - 1, int(np.floor(x.max() / spacing)) + 2)
    iy = np.arange(int(np.floor(y.min() / spacing)) - 1, int(np.floor(y.max() / spacing)) + 2)
    iyy, ixx = np.meshgrid(iy, ix, indexing="ij")
    cxs, cys = (c.ravel() for c in _lattice_centre(ixx, iyy, spacing, seed))
    if len(cxs) > 64:  # scattered points: fall back to the 3x3 neighbourhood per point
        return _voronoi_local(x, y, spacing, seed)
    d1 = np.full(x.shape, np.inf)
    d2 = np.full(x.shape, np.inf)
    ox_c, oy_c = np.zeros(x.shape), np.zeros(x.shape)
    for cx, cy in zip(cxs, cys):
        d1, d2, ox_c, oy_c = _keep_two_nearest(x, y, cx, cy, d1, d2, ox_c, oy_c)
    return d1, d2, ox_c, oy_c


def _voronoi_local(x: np.ndarray, y: np.ndarray, spacing: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Same as ``_voronoi_points`` via each point's 3x3 lattice neighbourhood."""
    gx, gy = np.floor(x / spacing).astype(np.int64), np.floor(y / spacing).astype(np.int64)
    d1 = np.full(x.shape, np.inf)
    d2 = np.full(x.shape, np.inf)
    ox_c, oy_c = np.zeros(x.shape), np.zeros(x.shape)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            ix, iy = gx + ox, gy + oy
            cx, cy = _lattice_centre(ix, iy, spacing, seed)
            d1, d2, ox_c, oy_c = _keep_two_nearest(x, y, cx, cy, d1, d2, ox_c, oy_c)
    return d1, d2, ox_c, oy_c


def _ne_septum(x: np.ndarray, y: np.ndarray, style: TumourStyle) -> tuple[np.ndarray, np.ndarray]:
    """Neuroendocrine architecture at points: (distance to the nearest septum in um,
    distance to a rosette lumen centre in um, inf when none)."""
    s = style.seed
    nest_d1, nest_d2, ncx, ncy = _voronoi_points(x, y, 70.0 * style.scale, s + 11)
    nest_sep = (nest_d2 - nest_d1) / 2.0
    c, si = np.cos(style.orientation), np.sin(style.orientation)
    period = 30.0 * style.scale
    t = (x * c + y * si) / period + 0.9 * noise_points(x, y, 60.0, s + 12)
    ribbon_sep = np.abs(t - np.round(t)) * period
    trab_share = 0.75 if style.pattern == "trabecular" else 0.25
    use_trab = noise_points(x, y, 160.0, s + 13) < trab_share
    sep = np.where(use_trab, ribbon_sep, nest_sep)
    has_rosette = hash_uniform(s + 14, np.round(ncx * 8).astype(np.int64),
                               np.round(ncy * 8).astype(np.int64)) < 0.35
    rosette_d = np.where(use_trab | ~has_rosette | (nest_d1 > 14.0), np.inf, nest_d1)
    return sep, rosette_d


def render_tumour(style: TumourStyle, xs: np.ndarray, ys: np.ndarray, in_tumour: PointTest
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tumour H & E on the pixel grid ``ys x xs`` (um centres).

    Returns (h_bg, e_bg, h_nuc, nuc_alpha), each (H, W) float32: background stain of the
    tumour region (cytoplasm, septa, streaks) and nuclei whose centres pass ``in_tumour``.
    """
    p, s = style.pattern, style.seed
    if p not in ALL_PATTERNS:
        raise ConfigError(f"tumour pattern {p!r}: expected one of {', '.join(ALL_PATTERNS)}")
    sc = style.scale
    spacing = {"nested": 8.4, "trabecular": 8.4, "lymphoma": 8.3, "small_cell": 7.8, "ewing": 8.8}[p] * sc
    jitter = {"nested": 0.4, "trabecular": 0.4, "lymphoma": 0.95, "small_cell": 0.6, "ewing": 0.55}[p]
    grid = make_grid(xs, ys, spacing, jitter, s + 21)
    u_kind = grid.rand(3)
    n1, n2 = grid.normal(4), grid.normal(5)
    occupied = in_tumour(grid.cx, grid.cy)
    theta = grid.rand(6) * np.pi
    X, Y = np.meshgrid(xs, ys)
    h_bg = np.zeros(X.shape, np.float32)
    e_bg = np.zeros(X.shape, np.float32)
    dark = np.ones(grid.cx.shape)
    texture_kind = "coarse"
    mitosis = apoptotic = np.zeros(grid.cx.shape, bool)
    owner_only = False
    if p in NE_PATTERNS:
        sep_c, ros_c = _ne_septum(grid.cx, grid.cy, style)
        occupied &= (sep_c > 4.0 * sc) & (ros_c > 5.0 * sc) & (grid.rand(7) < 0.97)
        a = 3.3 * sc * (1 + 0.04 * n1)
        b = a * (0.9 + 0.1 * grid.rand(8))
        dark = 0.78 * (1 + 0.05 * n2)
        texture_kind = "stippled"
        sep_px, ros_px = _ne_septum(X, Y, style)
        septum = np.clip((3.0 * sc - sep_px) / 1.0 + 0.5, 0, 1)
        lumen = np.clip((4.0 * sc - ros_px) / 1.0 + 0.5, 0, 1)
        gran = noise_grid(xs, ys, 0.7, s + 31)
        e_bg = 0.42 + 0.10 * gran
        capillary = (sep_px < 1.2 * sc) & (noise_grid(xs, ys, 2.5, s + 32) > 0.55)
        e_septum = np.where(capillary, 1.1, 0.55 + 0.15 * noise_grid(xs, ys, 1.5, s + 33))
        e_bg = e_bg * (1 - septum) + e_septum * septum
        e_bg = e_bg * (1 - lumen) + 0.75 * lumen
        h_bg = 0.04 + 0.03 * gran
    elif p == "lymphoma":
        occupied &= grid.rand(7) < 0.95
        a = 3.2 * sc * (1 + 0.16 * n1)
        b = a * (0.75 + 0.25 * grid.rand(8))
        dark = 1.0 * (1 + 0.12 * n2)
        mitosis, apoptotic = u_kind < 0.025, (u_kind >= 0.025) & (u_kind < 0.06)
        d1, _, _, _ = nearest_two(grid, xs, ys)
        gap = (d1 > 4.0 * sc) & (noise_grid(xs, ys, 3.0, s + 34) > 0.55)
        e_bg = np.where(gap, 0.3, 0.45 + 0.08 * noise_grid(xs, ys, 1.0, s + 35))
        h_bg = np.full(X.shape, 0.05, np.float32)
    elif p == "small_cell":
        owner_only = True
        occupied &= grid.rand(7) < 0.97
        flow = style.orientation + 1.2 * (noise_points(grid.cx, grid.cy, 80.0, s + 36) - 0.5)
        theta = flow + 0.3 * n2
        a = 3.5 * sc * (1 + 0.15 * n1)
        b = 2.3 * sc * (1 + 0.12 * grid.normal(9))
        dark = 1.0 * (1 + 0.1 * grid.normal(10))
        mitosis, apoptotic = u_kind < 0.03, (u_kind >= 0.03) & (u_kind < 0.07)
        c, si = np.cos(style.orientation), np.sin(style.orientation)
        along, across = X * c + Y * si, Y * c - X * si
        streak = noise_points(along / 14.0, across / 0.9, 1.0, s + 37)
        crush = np.clip((noise_grid(xs, ys, 45.0, s + 38) - 0.62) * 8, 0, 1)
        h_bg = 0.05 + crush * 0.75 * streak
        e_bg = 0.5 + 0.1 * noise_grid(xs, ys, 1.0, s + 39)
    else:  # ewing
        occupied &= grid.rand(7) < 0.98
        a = 3.3 * sc * (1 + 0.05 * n1)
        b = a * (0.88 + 0.12 * grid.rand(8))
        dark = 0.95 * (1 + 0.05 * n2)
        texture_kind = "fine"
        mitosis = u_kind < 0.012
        d1, d2, _, _ = nearest_two(grid, xs, ys)
        membrane = np.clip(1.0 - (d2 - d1) / 0.9, 0, 1)
        e_bg = 0.32 + 0.5 * membrane + 0.06 * noise_grid(xs, ys, 1.2, s + 40)
        h_bg = np.full(X.shape, 0.03, np.float32)
    # apoptotic bodies: small, very dark, shrunken; mitoses: ragged metaphase bars
    a = np.where(apoptotic, 1.7 * sc, np.where(mitosis, 4.5 * sc, a))
    b = np.where(apoptotic, 1.6 * sc, np.where(mitosis, 1.4 * sc, b))
    dark = np.where(apoptotic, 1.5, np.where(mitosis, 1.45, dark))
    wobble = 0.10 * (noise_grid(xs, ys, 1.2, s + 41) - 0.5)
    if p in ("lymphoma", "small_cell"):
        wobble = wobble * 2.0
    if owner_only:
        _, _, own_y, own_x = nearest_two(grid, xs, ys)
        single = np.zeros(grid.cx.shape, bool)
        rho = np.full(X.shape, np.inf, np.float32)
        cy_own, cx_own = grid.cy[own_y, own_x], grid.cx[own_y, own_x]
        dx, dy = X - cx_own, Y - cy_own
        th = theta[own_y, own_x]
        u = (dx * np.cos(th) + dy * np.sin(th)) / a[own_y, own_x]
        v = (dy * np.cos(th) - dx * np.sin(th)) / b[own_y, own_x]
        rho = np.where(occupied[own_y, own_x], np.sqrt(u * u + v * v) * (1 + wobble), np.inf)
        del single
    else:
        rho, own_y, own_x = ellipse_rho(grid, xs, ys, occupied, a, b, theta, wobble)
    prof = nucleus_profile(rho.astype(np.float32), rim=0.35 if texture_kind == "stippled" else 0.15)
    tex = _texture(xs, ys, s + 42, texture_kind)
    special = (apoptotic | mitosis)[own_y, own_x]
    tex = np.where(special, 1.0, tex)
    h_nuc = (prof * tex * np.asarray(dark, np.float32)[own_y, own_x]).astype(np.float32)
    if apoptotic.any():  # eosinophilic halo around apoptotic bodies
        halo = (rho > 1.0) & (rho < 2.2) & apoptotic[own_y, own_x]
        e_bg = np.where(halo, 0.9, e_bg)
    hs, ho, es, eo = PATTERN_TONE[p]
    alpha = np.clip(prof, 0, 1).astype(np.float32)
    return (np.maximum(h_bg * hs + ho, 0)).astype(np.float32), \
        (np.maximum(e_bg * es + eo, 0)).astype(np.float32), \
        (h_nuc * hs + ho * alpha).astype(np.float32), alpha
