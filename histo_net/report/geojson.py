"""QuPath-importable GeoJSON of a slide: the tissue contour and one polygon per tile.

Follows what QuPath 0.5 / 0.6 read (``PathObjectTypeAdapters``: File > Import objects, or
drag and drop): a ``FeatureCollection`` of ``Feature`` s with a ``Polygon`` /
``MultiPolygon`` geometry in level-0 pixels (origin top-left) and ``properties`` with
``objectType`` ("tile" for tiles, "annotation" for the tissue contour), ``name`` (string),
``classification`` ``{name, color: [r, g, b]}`` and ``measurements`` (name -> number;
QuPath reads them into a map of doubles, so non-finite values are left out, never null).
Tile squares are clipped to the slide bounds (edge tiles extend past the slide, which is
read as white); the tissue contour is traced from the tissue mask and clipped likewise.
"""

from __future__ import annotations

import numpy as np

from histo_net.report.model import SlideReport

#: colours for tile classes, by conventional name first, then by position
_NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "non_tumour": (150, 150, 150),
    "non_tumor": (150, 150, 150),
    "background": (200, 200, 200),
}
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
)


def class_colours(class_names: list[str]) -> dict[str, list[int]]:
    """Stable ``{class: [r, g, b]}`` (0-255): grey for non-tumour, a fixed palette otherwise."""
    colours: dict[str, list[int]] = {}
    palette_index = 0
    for name in class_names:
        named = _NAMED_COLOURS.get(name.lower())
        if named is not None:
            colours[name] = list(named)
        else:
            colours[name] = list(_PALETTE[palette_index % len(_PALETTE)])
            palette_index += 1
    return colours


TISSUE_CLASS = "Tissue"
TISSUE_RGB = [0, 90, 255]
#: longest side (px) of the mask the tissue contour is traced on (bounds the vertex count)
CONTOUR_MAX_PX = 1024


def tile_features(coords_level0: np.ndarray, patch_size_level0: int, attention: np.ndarray,
                  tile_probs: np.ndarray, tile_class_names: list[str],
                  level0_size: tuple[int, int] | None = None) -> list[dict]:
    """One GeoJSON Feature per tile: closed square ring, argmax class, attention + probabilities.

    ``coords_level0`` (N, 2) int64 top-left (x, y); ``attention`` (N,); ``tile_probs`` (N, C);
    ``level0_size`` (width, height): squares are clipped to it. Non-finite values are omitted.
    """
    coords = np.asarray(coords_level0, dtype=np.int64).reshape(-1, 2)
    attn = np.asarray(attention, dtype=np.float64).reshape(-1)
    probs = np.asarray(tile_probs, dtype=np.float64)
    if len(attn) != len(coords) or probs.shape != (len(coords), len(tile_class_names)):
        raise ValueError(
            f"tile_features: coords {coords.shape}, attention {attn.shape}, tile_probs "
            f"{probs.shape} and {len(tile_class_names)} tile classes do not agree")
    colours = class_colours(tile_class_names)
    size = int(patch_size_level0)
    best = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1) if probs.size else np.zeros(0, int)
    features = []
    width, height = level0_size if level0_size is not None else (None, None)
    for i, (x, y) in enumerate(coords.tolist()):
        x1 = x + size if width is None else min(x + size, int(width))
        y1 = y + size if height is None else min(y + size, int(height))
        ring = [[x, y], [x1, y], [x1, y1], [x, y1], [x, y]]
        name = tile_class_names[int(best[i])]
        values = {"attention": attn[i], **{f"prob_{c}": probs[i, j]
                                           for j, c in enumerate(tile_class_names)}}
        measurements = {k: float(v) for k, v in values.items() if np.isfinite(v)}
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "tile",
                "name": f"tile {i} ({x}, {y})",
                "classification": {"name": name, "color": colours[name]},
                "measurements": measurements,
            },
        })
    return features


def _ring_level0(contour: np.ndarray, downsample: float, bounds: tuple[int, int] | None) -> list:
    """A cv2 contour (K,1,2) of mask pixel centres -> closed level-0 ring, clipped to bounds."""
    pts = (contour.reshape(-1, 2).astype(np.float64) + 0.5) * downsample
    if bounds is not None:
        pts = np.clip(pts, 0.0, [float(bounds[0]), float(bounds[1])])
    ring = [[round(float(x), 1), round(float(y), 1)] for x, y in pts]
    return ring + [ring[0]]


def tissue_polygons(mask: np.ndarray, downsample: float,
                    level0_size: tuple[int, int] | None = None) -> list[list[list[list[float]]]]:
    """Polygons (exterior ring, then hole rings; level-0 px) of a (H, W) bool tissue mask
    whose pixels are ``downsample`` level-0 px wide; clipped to ``level0_size``."""
    import cv2  # deferred: only needed when a report is written

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    step = max(1, int(np.ceil(max(mask.shape) / CONTOUR_MAX_PX)))
    small = mask[::step, ::step].astype(np.uint8)
    contours, hierarchy = cv2.findContours(small, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]  # (K, 4): next, previous, first child, parent
    polygons = []
    for k, contour in enumerate(contours):
        if hierarchy[k][3] != -1 or len(contour) < 3:
            continue  # holes are attached to their exterior below; tiny specks have no area
        rings = [_ring_level0(contour, downsample * step, level0_size)]
        child = hierarchy[k][2]
        while child != -1:
            if len(contours[child]) >= 3:
                rings.append(_ring_level0(contours[child], downsample * step, level0_size))
            child = hierarchy[child][0]
        polygons.append(rings)
    return polygons


def tissue_feature(mask: np.ndarray, downsample: float, level0_size: tuple[int, int] | None,
                   area_mm2: float | None = None) -> dict | None:
    """The tissue contour as one QuPath annotation (MultiPolygon), None when there is none."""
    polygons = tissue_polygons(mask, downsample, level0_size)
    if not polygons:
        return None
    properties: dict = {"objectType": "annotation", "name": "tissue (histo-net)",
                        "classification": {"name": TISSUE_CLASS, "color": TISSUE_RGB},
                        "isLocked": True}
    if area_mm2 is not None and np.isfinite(area_mm2):
        properties["measurements"] = {"tissue_area_mm2": float(area_mm2)}
    return {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": polygons},
            "properties": properties}


def build_geojson(report: SlideReport) -> dict:
    """The report's tissue contour and tiles as a QuPath-importable FeatureCollection."""
    bounds = report.level0_size
    features = tile_features(report.coords_level0, report.patch_size_level0, report.attention,
                             report.tile_probs, list(report.tile_class_names), bounds)
    tissue = tissue_feature(report.tissue_mask, float(report.tissue_downsample), bounds,
                            report.qc.get("tissue_area_mm2"))
    return {"type": "FeatureCollection", "features": ([tissue] if tissue else []) + features}
