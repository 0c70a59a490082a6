"""Tissue detection on a low-resolution RGB image: pure numpy/scipy, no I/O.

HSV saturation thresholded with Otsu, clipped to ``[saturation_floor,
saturation_ceiling]`` so a blank slide stays blank (Otsu on glass noise would
otherwise split noise) and an all-tissue image is not split into two stain
classes; near-black pixels (below ``dark_floor``) are excluded; then closing,
hole filling and small-object removal with sizes in um.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from histo_net.config import TissueConfig
from histo_net.types import BoolMask, MicronsPerPixel, RGBImage


def saturation(rgb: RGBImage) -> np.ndarray:
    """(H,W) float32 HSV saturation in [0, 1] of a (H,W,3) uint8 image (0 where black)."""
    rgb = np.asarray(rgb)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cmax = np.maximum(np.maximum(red, green), blue).astype(np.float32)  # faster than max(axis=2)
    cmin = np.minimum(np.minimum(red, green), blue).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(cmax > 0, (cmax - cmin) / cmax, 0.0)
    return sat.astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of values in [0, 1] (histogram; middle of a flat optimum); 0.0 if constant."""
    index = np.clip((np.asarray(values, np.float32) * bins).astype(np.int64), 0, bins - 1)
    hist = np.bincount(index.ravel(), minlength=bins).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = hist.sum()
    if total == 0:
        return 0.0
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centers)
    mean_all = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_all * w0 - m0 * total) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    best = between.max()
    if best <= 0:
        return 0.0
    plateau = np.flatnonzero(between >= best * (1 - 1e-9))  # flat across an empty gap
    return float(edges[(plateau[0] + plateau[-1]) // 2 + 1])


def _disk(radius_px: int) -> np.ndarray:
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius_px**2


def _remove_small(mask: BoolMask, min_px: float) -> BoolMask:
    if min_px <= 1:
        return mask
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: BoolMask, max_hole_px: float) -> BoolMask:
    if max_hole_px <= 0:
        return mask
    holes, n = ndimage.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill = sizes <= max_hole_px
    fill[0] = False
    fill[border] = False
    return mask | fill[holes]


def tissue_mask(rgb: RGBImage, mpp: MicronsPerPixel, cfg: TissueConfig | None = None) -> BoolMask:
    """(H,W) bool tissue mask of a (H,W,3) uint8 RGB image whose pixels are ``mpp`` um wide.

    A blank (glass-only) image gives an all-False mask.
    """
    cfg = cfg or TissueConfig()
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"tissue_mask expects (H,W,3) RGB, got shape {rgb.shape}")
    sat = saturation(rgb[..., :3])
    threshold = min(max(otsu_threshold(sat), cfg.saturation_floor), cfg.saturation_ceiling)
    mask = sat > threshold
    if cfg.dark_floor > 0:  # near-black (scanner borders, ink) has noisy, high saturation
        mask &= rgb[..., :3].max(axis=2) >= cfg.dark_floor
    if not mask.any():
        return mask
    px_area_um2 = mpp * mpp
    radius_px = round(cfg.closing_um / mpp)
    if radius_px >= 1:
        pad = radius_px + 1
        padded = np.pad(mask, pad)
        mask = ndimage.binary_closing(padded, structure=_disk(radius_px))[pad:-pad, pad:-pad]
    mask = _fill_small_holes(mask, cfg.max_hole_area_um2 / px_area_um2)
    return _remove_small(mask, min(cfg.min_tissue_area_um2 / px_area_um2,
                                   cfg.min_area_max_image_fraction * mask.size))
