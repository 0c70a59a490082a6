"""Compose one slide region: glass, shared tissue, tumour, stain, blur and noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from matplotlib.path import Path as MplPath
from PIL import Image
from scipy.ndimage import gaussian_filter

from histo_net.synth.background import render_background
from histo_net.synth.layout import SlideLayout, sample_grid, sample_points
from histo_net.synth.morphology import TumourStyle, apply_tone, render_tumour
from histo_net.synth.noise import hash_uniform
from histo_net.synth.spec import SlideSpec
from histo_net.synth.stain import StainParams, concentrations_to_rgb

_MARGIN_PX = 6


class _Raster:
    """Boolean polygon membership on a regular um grid, looked up at arbitrary points."""

    def __init__(self, x0_um: float, y0_um: float, step_um: float, inside: np.ndarray) -> None:
        self.x0, self.y0, self.step, self.inside = x0_um, y0_um, step_um, inside

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Membership of the nearest raster point (False outside the raster)."""
        j = np.rint((np.asarray(x) - self.x0) / self.step).astype(np.int64)
        i = np.rint((np.asarray(y) - self.y0) / self.step).astype(np.int64)
        ok = (i >= 0) & (i < self.inside.shape[0]) & (j >= 0) & (j < self.inside.shape[1])
        return ok & self.inside[np.clip(i, 0, self.inside.shape[0] - 1), np.clip(j, 0, self.inside.shape[1] - 1)]


def _polygon_raster(lay: SlideLayout, xs: np.ndarray, ys: np.ndarray, pad_um: float = 14.0,
                    step_um: float = 1.0) -> _Raster:
    """Tumour-polygon membership around a render grid (padded for neighbouring nuclei)."""
    gx = np.arange(xs[0] - pad_um, xs[-1] + pad_um + step_um, step_um)
    gy = np.arange(ys[0] - pad_um, ys[-1] + pad_um + step_um, step_um)
    X, Y = np.meshgrid(gx, gy)
    pts = np.stack([X.ravel(), Y.ravel()], axis=1) / lay.mpp
    inside = np.zeros(len(pts), bool)
    for poly in lay.tumour_polygons:
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        near = (pts[:, 0] >= lo[0]) & (pts[:, 0] <= hi[0]) & (pts[:, 1] >= lo[1]) & (pts[:, 1] <= hi[1])
        if near.any():
            inside[near] |= MplPath(poly).contains_points(pts[near])
    return _Raster(float(gx[0]), float(gy[0]), step_um, inside.reshape(X.shape))


def render_region(spec: SlideSpec, x0: int, y0: int, w_px: int, h_px: int, downsample: float
                  ) -> np.ndarray:
    """RGB (h_px, w_px, 3) uint8 of the level-0 region at (x0, y0), one output px = ``downsample`` level-0 px."""
    lay = spec.layout
    mpp_out = lay.mpp * downsample
    m = _MARGIN_PX
    xs = (x0 + (np.arange(-m, w_px + m) + 0.5) * downsample) * lay.mpp  # um
    ys = (y0 + (np.arange(-m, h_px + m) + 0.5) * downsample) * lay.mpp
    step = lay.step_um
    tissue_w = sample_grid(lay.tissue, xs, ys, step)
    noise_rng = np.random.default_rng(
        int(hash_uniform(spec.seed, x0, y0, int(downsample * 1000))[0] * 2**62))
    h = np.zeros(tissue_w.shape, np.float32)
    e = np.zeros(tissue_w.shape, np.float32)
    if tissue_w.max() > 0:
        tumour_w = sample_grid(lay.tumour, xs, ys, step)
        in_tissue = tissue_w > 0.5
        boundary = bool(tumour_w.max() > 0) and bool(tumour_w.min() < 1) and bool(lay.tumour_polygons)

        raster = _polygon_raster(lay, xs, ys) if boundary else None

        def in_tumour(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            """Polygon interior near the boundary (a 1 um raster), the mask elsewhere."""
            if raster is None:
                return sample_points(lay.tumour, x, y, step) > 0.5
            return raster.lookup(x, y) & (sample_points(lay.tissue, x, y, step) > 0.5)

        if raster is not None:
            gx, gy = np.meshgrid(xs, ys)
            in_tumour_px = in_tumour(gx, gy)
        else:
            in_tumour_px = tumour_w > 0.5

        def stroma_cells(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return (sample_points(lay.tissue, x, y, step) > 0.5) & ~in_tumour(x, y)

        def lymph_at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return sample_points(lay.lymph, x, y, step)

        hb, eb = render_background(
            xs, ys, spec.seed + 1000, spec.fibre_angle, sample_grid(lay.fat, xs, ys, step),
            sample_grid(lay.necrosis, xs, ys, step), sample_grid(lay.lymph, xs, ys, step),
            stroma_cells, lymph_at)
        h = np.where(in_tissue, hb, 0)
        e = np.where(in_tissue, eb, 0)
        if in_tumour_px.any():
            ht, et, hn, alpha = apply_tone(render_tumour(spec.style, xs, ys, in_tumour), spec.style.tone)
            h = np.where(in_tumour_px, ht, h)
            e = np.where(in_tumour_px, et, e)
            h = np.maximum(h, hn)
            e = e * (1 - 0.35 * alpha)
        # thin-section edge: tissue fades over ~2 um rather than a hard step
        fade = np.clip((tissue_w - 0.35) / 0.3, 0, 1)
        h, e = h * fade, e * fade
    sigma_px = spec.stain.blur_sigma_um / mpp_out
    if sigma_px > 0.2:
        h = gaussian_filter(h, sigma_px, mode="nearest")
        e = gaussian_filter(e, sigma_px, mode="nearest")
    h, e = h[m:-m, m:-m], e[m:-m, m:-m]
    return concentrations_to_rgb(h, e, spec.stain, noise_rng)


def make_tile_fn(spec: SlideSpec, tile_px: int, render_downsample: int
                 ) -> Callable[[int, int], np.ndarray]:
    """``f(tx, ty)`` -> level-0 tile (tile_px, tile_px, 3) uint8, rendered at ``render_downsample``
    and upsampled (bilinear) so level 0 stays cheap to generate."""

    def tile(tx: int, ty: int) -> np.ndarray:
        small_px = tile_px // render_downsample
        img = render_region(spec, tx * tile_px, ty * tile_px, small_px, small_px, render_downsample)
        if render_downsample == 1:
            return img
        return np.asarray(Image.fromarray(img).resize((tile_px, tile_px), Image.BILINEAR))

    return tile


def tumour_tile(style: TumourStyle, stain: StainParams, x0: int, y0: int, size_px: int = 128,
                downsample: float = 2.0, mpp: float = 0.25) -> np.ndarray:
    """A tile (size_px, size_px, 3) uint8 entirely inside tumour, rendered like a slide would be.

    Uses a layout that is tumour everywhere, so tests and calibration can sample
    tumour-region tiles of any subtype without writing a slide.
    """
    extent = int(x0 + y0 + 4 * size_px * downsample) + 64
    n = extent // 16 + 2
    ones = np.ones((n, n), bool)
    zeros = np.zeros((n, n), np.float32)
    lay = SlideLayout(n * 16, n * 16, mpp, 16, np.zeros((0, 2)), (), ones, ones, zeros, zeros,
                      zeros + 0.05)
    spec = SlideSpec(style.seed, lay, style, stain, 0.0, 90, style.subtype)
    return render_region(spec, x0, y0, size_px, size_px, downsample)
