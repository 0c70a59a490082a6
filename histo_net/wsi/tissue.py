"""Tissue detection on a low-resolution RGB image: pure numpy + OpenCV (scipy fallback), no I/O.

HSV saturation thresholded with Otsu, clipped to ``[floor, saturation_ceiling]``
so a blank slide stays blank (Otsu on glass noise would otherwise split noise)
and an all-tissue image is not split into two stain classes. The floor is
``saturation_floor`` lowered towards the glass: the median saturation of the
brightest 10% of pixels plus ``GLASS_MARGIN``, never below ``MIN_FLOOR``, so a
faintly stained section on clean glass is still found while tinted glass keeps
the configured floor. Near-black pixels (below ``dark_floor``) are excluded;
then closing, hole filling and small-object removal with sizes in um.
"""

from __future__ import annotations

import numpy as np

from histo_net.config import TissueConfig
from histo_net.types import BoolMask, MicronsPerPixel, RGBImage

#: saturation above the glass's own that counts as stain
GLASS_MARGIN = 0.03
#: the adaptive floor never goes below this (blank-glass noise stays below it)
MIN_FLOOR = 0.03
#: the brightest this fraction of pixels estimates the glass
GLASS_QUANTILE = 0.9


def brightest_channel(rgb: RGBImage) -> np.ndarray:
    """(H,W) uint8 maximum over R, G, B (HSV value), much faster than ``max(axis=2)``."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def saturation(rgb: RGBImage, cmax: np.ndarray | None = None) -> np.ndarray:
    """(H,W) float32 HSV saturation in [0, 1] of a (H,W,3) uint8 image (0 where black).

    ``cmax`` is the precomputed :func:`brightest_channel`, if at hand.
    """
    rgb = np.asarray(rgb)
    cmax = brightest_channel(rgb) if cmax is None else cmax
    spread = cmax - np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])  # uint8, >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = spread.astype(np.float32) / cmax.astype(np.float32)
    sat[cmax == 0] = 0.0
    return sat


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of values in [0, 1] (histogram; middle of a flat optimum); 0.0 if constant."""
    index = (np.asarray(values, np.float32) * np.float32(bins)).astype(np.int32)
    np.clip(index, 0, bins - 1, out=index)
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


def saturation_floor(brightness: np.ndarray, sat: np.ndarray, configured_floor: float) -> float:
    """Lowest threshold that stays clear of the glass: glass saturation + margin, in
    ``[MIN_FLOOR, configured_floor]``.

    ``brightness`` (H,W) uint8 is the brightest channel, ``sat`` (H,W) the saturation.
    The glass is estimated as the median saturation of the brightest pixels (at or
    above the ``GLASS_QUANTILE`` brightness); on an all-tissue image those are pale
    tissue, so the floor stays at ``configured_floor``.
    """
    counts = np.cumsum(np.bincount(brightness.ravel(), minlength=256))
    cut = int(np.searchsorted(counts, GLASS_QUANTILE * counts[-1]))
    glass = float(np.median(sat[brightness >= cut]))
    return float(np.clip(glass + GLASS_MARGIN, min(MIN_FLOOR, configured_floor), configured_floor))


def _disk(radius_px: int) -> np.ndarray:
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius_px**2


# OpenCV (optional, albumentations brings it) does the morphology and labelling when present:
# same results as scipy.ndimage, and importing scipy.ndimage alone costs ~0.5 s per process;
# both are imported inside the functions for that reason.


def _closing(mask: BoolMask, disk: np.ndarray) -> BoolMask:
    """Binary closing (dilate then erode) of a zero-padded mask.

    Same result as ``ndimage.binary_closing(mask, structure=disk)`` while the padding
    is at least the disk radius + 1 (OpenCV about 9x faster).
    """
    try:
        import cv2
    except ImportError:
        from scipy import ndimage

        return ndimage.binary_closing(mask, structure=disk)
    closed = cv2.morphologyEx(np.ascontiguousarray(mask).view(np.uint8), cv2.MORPH_CLOSE,
                              disk.astype(np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return closed.view(bool)


def erode_mask(mask: BoolMask, iterations: int = 1) -> BoolMask:
    """``ndimage.binary_erosion(mask, iterations=iterations, border_value=0)`` (3x3 cross)."""
    try:
        import cv2
    except ImportError:
        from scipy import ndimage

        return ndimage.binary_erosion(mask, iterations=iterations, border_value=0)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    out = cv2.erode(np.ascontiguousarray(mask).view(np.uint8), cross, iterations=iterations,
                    borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


def _components(mask: BoolMask) -> tuple[np.ndarray, np.ndarray]:
    """4-connected components: ``(labels (H,W) int32, sizes (n+1,) px)``; label 0 is outside."""
    try:
        import cv2
    except ImportError:
        from scipy import ndimage

        labels, _ = ndimage.label(mask)
        return labels, np.bincount(labels.ravel())
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask).view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    sizes = stats[:, cv2.CC_STAT_AREA]
    return labels, sizes


def _remove_small(mask: BoolMask, min_px: float) -> BoolMask:
    if min_px <= 1:
        return mask
    labels, sizes = _components(mask)
    if len(sizes) <= 1:
        return mask
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: BoolMask, max_hole_px: float) -> BoolMask:
    if max_hole_px <= 0:
        return mask
    holes, sizes = _components(~mask)
    if len(sizes) <= 1:
        return mask
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
    brightness = brightest_channel(rgb)
    sat = saturation(rgb, brightness)
    floor = saturation_floor(brightness, sat, cfg.saturation_floor)
    threshold = min(max(otsu_threshold(sat), floor), cfg.saturation_ceiling)
    mask = sat > threshold
    if cfg.dark_floor > 0:  # near-black (scanner borders, ink) has noisy, high saturation
        mask &= brightness >= cfg.dark_floor
    if not mask.any():
        return mask
    px_area_um2 = mpp * mpp
    radius_px = round(cfg.closing_um / mpp)
    if radius_px >= 1:
        pad = radius_px + 1
        mask = _closing(np.pad(mask, pad), _disk(radius_px))[pad:-pad, pad:-pad]
    mask = _fill_small_holes(mask, cfg.max_hole_area_um2 / px_area_um2)
    return _remove_small(mask, min(cfg.min_tissue_area_um2 / px_area_um2,
                                   cfg.min_area_max_image_fraction * mask.size))
