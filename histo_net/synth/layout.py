"""Slide layout: an irregular tissue section on glass, tumour polygons inside it, and
low-resolution fields (tissue, tumour, fat, necrosis, lymphocyte density).

Polygons are level-0 pixel coordinates (x, y). The tumour mask is the polygons
rasterised at ``mask_downsample`` (pixel centres inside = tumour), and the renderer
draws tumour exactly where that mask says, so polygon-derived labels are truthful.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as MplPath

from histo_net.synth.noise import noise_grid


@dataclass(frozen=True)
class SlideLayout:
    """Tissue and tumour geometry of one slide. Arrays are (H/ds, W/ds) at ``mask_downsample``."""

    width: int
    height: int
    mpp: float
    mask_downsample: int
    tissue_polygon: np.ndarray  # (K, 2) float64 level-0 px
    tumour_polygons: tuple[np.ndarray, ...]  # each (K, 2) float64 level-0 px
    tissue: np.ndarray  # bool
    tumour: np.ndarray  # bool, subset of tissue
    fat: np.ndarray  # float32 0..1
    necrosis: np.ndarray  # float32 0..1
    lymph: np.ndarray  # float32 0..1, lymphocyte density

    @property
    def step_um(self) -> float:
        """Size of one layout pixel in micrometres."""
        return self.mask_downsample * self.mpp

    @property
    def tumour_fraction(self) -> float:
        """Tumour area / tissue area from the mask."""
        return float(self.tumour.sum() / max(1, self.tissue.sum()))


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float, n_vertices: int,
          roughness: float) -> np.ndarray:
    """Star-shaped closed polygon (K, 2) with a few random harmonics of the radius."""
    angles = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    r = np.ones_like(angles)
    for k in range(2, 8):
        r += roughness / k * rng.normal() * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.45, 1.6) * radius
    return np.stack([centre[0] + r * np.cos(angles), centre[1] + r * np.sin(angles)], axis=1)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon (K, 2) in squared units."""
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rasterise(polygons: list[np.ndarray] | tuple[np.ndarray, ...], width: int, height: int,
              downsample: int) -> np.ndarray:
    """Bool mask (ceil(H/ds), ceil(W/ds)): pixel centres inside any polygon (level-0 px)."""
    mh, mw = -(-height // downsample), -(-width // downsample)
    xs = (np.arange(mw) + 0.5) * downsample
    ys = (np.arange(mh) + 0.5) * downsample
    out = np.zeros((mh, mw), bool)
    for poly in polygons:
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        cols = np.nonzero((xs >= x0) & (xs <= x1))[0]
        rows = np.nonzero((ys >= y0) & (ys <= y1))[0]
        if len(cols) == 0 or len(rows) == 0:
            continue
        gx, gy = np.meshgrid(xs[cols], ys[rows])
        inside = MplPath(poly).contains_points(np.stack([gx.ravel(), gy.ravel()], 1))
        out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] |= inside.reshape(gx.shape)
    return out


def make_layout(rng: np.random.Generator, width: int, height: int, mpp: float,
                mask_downsample: int = 16, tumour_fraction: float = 0.3, n_foci: int = 1,
                field_seed: int = 0) -> SlideLayout:
    """Random tissue section with ``n_foci`` tumour regions covering about ``tumour_fraction``
    of the tissue (0: no tumour at all)."""
    size = float(min(width, height))
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.04, 0.04, 2) * size
    tissue_poly = _blob(rng, centre, 0.36 * size, 128, 0.5)
    tissue_poly[:, 0] = np.clip(tissue_poly[:, 0], 0.03 * width, 0.97 * width)
    tissue_poly[:, 1] = np.clip(tissue_poly[:, 1], 0.03 * height, 0.97 * height)
    tissue = rasterise([tissue_poly], width, height, mask_downsample)
    tissue_path = MplPath(tissue_poly)
    target = float(tumour_fraction)
    n_blobs = max(1, int(n_foci))
    tissue_area = polygon_area(tissue_poly)
    blobs: list[np.ndarray] = []
    for _ in range(300 if target > 0 else 0):
        if len(blobs) == n_blobs:
            break
        radius = np.sqrt(target * tissue_area / n_blobs / np.pi) * rng.uniform(0.9, 1.1)
        c = centre + rng.uniform(-0.28, 0.28, 2) * size
        blob = _blob(rng, c, radius, 96, 0.35)
        if not tissue_path.contains_points(blob, radius=-0.02 * size).all():
            target *= 0.98
            continue
        if any(MplPath(o).contains_points(blob).any() or MplPath(blob).contains_points(o).any()
               or np.hypot(*(blob.mean(0) - o.mean(0))) < 1e-6 for o in blobs):
            continue
        blobs.append(blob)
    if target > 0 and not blobs:  # fall back to a centred blob well inside the tissue
        blobs = [_blob(rng, centre, min(0.12 * size, np.sqrt(target * tissue_area / np.pi)), 96, 0.2)]
    tumour = rasterise(blobs, width, height, mask_downsample) & tissue
    step_um = mask_downsample * mpp
    mh, mw = tissue.shape
    xs, ys = (np.arange(mw) + 0.5) * step_um, (np.arange(mh) + 0.5) * step_um
    fat = np.clip((noise_grid(xs, ys, 220.0, field_seed + 1) - 0.74) * 12, 0, 1) * tissue
    necrosis = np.clip((noise_grid(xs, ys, 120.0, field_seed + 2) - 0.78) * 12, 0, 1) * tissue * (fat < 0.01)
    lymph = 0.04 + 0.55 * np.clip((noise_grid(xs, ys, 150.0, field_seed + 3) - 0.55) * 3, 0, 1)
    return SlideLayout(width, height, mpp, mask_downsample, tissue_poly, tuple(blobs), tissue,
                       tumour, fat.astype(np.float32), necrosis.astype(np.float32),
                       lymph.astype(np.float32))


def sample_grid(field: np.ndarray, xs_um: np.ndarray, ys_um: np.ndarray, step_um: float) -> np.ndarray:
    """Bilinear sample of a layout field (pixel centres at (j+0.5)*step) on grid ys x xs -> (H, W)."""
    gx = np.clip(np.asarray(xs_um) / step_um - 0.5, 0, field.shape[1] - 1)
    gy = np.clip(np.asarray(ys_um) / step_um - 0.5, 0, field.shape[0] - 1)
    # work on the window the grid touches (the field may be a whole slide's)
    c0, r0 = int(np.floor(gx.min())), int(np.floor(gy.min()))
    c1, r1 = min(int(np.floor(gx.max())) + 2, field.shape[1]), min(int(np.floor(gy.max())) + 2, field.shape[0])
    f = np.asarray(field[r0:r1, c0:c1], np.float32)
    gx, gy = gx - c0, gy - r0
    x0 = np.minimum(np.floor(gx).astype(np.int64), f.shape[1] - 2 if f.shape[1] > 1 else 0)
    y0 = np.minimum(np.floor(gy).astype(np.int64), f.shape[0] - 2 if f.shape[0] > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, f.shape[1] - 1), np.minimum(y0 + 1, f.shape[0] - 1)
    fx, fy = (gx - x0).astype(np.float32)[None, :], (gy - y0).astype(np.float32)[:, None]
    rows = f[:, x0] * (1 - fx) + f[:, x1] * fx  # separable bilinear: columns first
    return (rows[y0] * (1 - fy) + rows[y1] * fy).astype(np.float32)


def sample_points(field: np.ndarray, x_um: np.ndarray, y_um: np.ndarray, step_um: float) -> np.ndarray:
    """Bilinear sample of a layout field at arbitrary points (same shape as ``x_um``)."""
    gx = np.clip(np.asarray(x_um) / step_um - 0.5, 0, field.shape[1] - 1)
    gy = np.clip(np.asarray(y_um) / step_um - 0.5, 0, field.shape[0] - 1)
    if gx.size == 0:
        return np.zeros(gx.shape, np.float32)
    c0, r0 = int(np.floor(gx.min())), int(np.floor(gy.min()))
    c1, r1 = min(int(np.floor(gx.max())) + 2, field.shape[1]), min(int(np.floor(gy.max())) + 2, field.shape[0])
    f = np.asarray(field[r0:r1, c0:c1], np.float32)
    gx, gy = gx - c0, gy - r0
    x0 = np.minimum(np.floor(gx).astype(np.int64), max(f.shape[1] - 2, 0))
    y0 = np.minimum(np.floor(gy).astype(np.int64), max(f.shape[0] - 2, 0))
    x1, y1 = np.minimum(x0 + 1, f.shape[1] - 1), np.minimum(y0 + 1, f.shape[0] - 1)
    fx, fy = gx - x0, gy - y0
    top = f[y0, x0] * (1 - fx) + f[y0, x1] * fx
    bot = f[y1, x0] * (1 - fx) + f[y1, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)
