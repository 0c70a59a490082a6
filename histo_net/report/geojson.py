"""QuPath-importable GeoJSON of a slide's tiles (one polygon per tile, level-0 pixels).

QuPath (File > Import objects) reads a FeatureCollection whose features carry
``properties.objectType`` ("tile"), ``classification`` {name, color [r, g, b]} and a
``measurements`` mapping of name -> number.
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


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def tile_features(coords_level0: np.ndarray, patch_size_level0: int, attention: np.ndarray,
                  tile_probs: np.ndarray, tile_class_names: list[str]) -> list[dict]:
    """One GeoJSON Feature per tile: closed square ring, argmax class, attention + probabilities.

    ``coords_level0`` (N, 2) int64 top-left (x, y); ``attention`` (N,); ``tile_probs`` (N, C).
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
    for i, (x, y) in enumerate(coords.tolist()):
        ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
        name = tile_class_names[int(best[i])]
        measurements = {"attention": _finite_or_none(attn[i])}
        for j, cls in enumerate(tile_class_names):
            measurements[f"prob_{cls}"] = _finite_or_none(probs[i, j])
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


def build_geojson(report: SlideReport) -> dict:
    """The report's tiles as a QuPath-importable FeatureCollection (JSON-safe dict)."""
    return {
        "type": "FeatureCollection",
        "features": tile_features(report.coords_level0, report.patch_size_level0, report.attention,
                                  report.tile_probs, list(report.tile_class_names)),
    }
