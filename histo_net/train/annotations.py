"""QuPath GeoJSON tumour annotations and tile labels derived from them.

Polygons are in level-0 pixels. A tile takes the class of the tumour polygon
that contains its centre; tiles outside every polygon are ``non_tumour``.
Point-in-polygon is vectorised with ``matplotlib.path.Path.contains_points``;
holes (interior rings) are honoured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from histo_net.errors import ConfigError
from histo_net.types import Coords

logger = logging.getLogger(__name__)

NON_TUMOUR = "non_tumour"


@dataclass(frozen=True)
class AnnotatedPolygon:
    """One polygon: exterior ring (M,2) float64 level-0 px, interior rings, class name."""

    exterior: npt.NDArray[np.float64]
    holes: tuple[npt.NDArray[np.float64], ...]
    class_name: str | None


def _ring(points: Any, path: Path) -> npt.NDArray[np.float64]:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 3 or arr.shape[1] < 2:
        raise ConfigError(f"{path}: polygon ring needs at least 3 (x, y) points")
    return arr[:, :2]


def _class_name(props: Any) -> str | None:
    if not isinstance(props, dict):
        return None
    cls = props.get("classification")
    if isinstance(cls, dict) and isinstance(cls.get("name"), str):
        return cls["name"]
    if isinstance(cls, str):
        return cls
    name = props.get("class_name") or props.get("name")
    return name if isinstance(name, str) else None


def _features(data: Any) -> list[dict]:
    if isinstance(data, list):
        return [f for f in data if isinstance(f, dict)]
    if isinstance(data, dict):
        if data.get("type") == "FeatureCollection":
            return [f for f in data.get("features", []) if isinstance(f, dict)]
        if data.get("type") == "Feature":
            return [data]
        if "type" in data and "coordinates" in data:  # bare geometry
            return [{"type": "Feature", "geometry": data, "properties": {}}]
    return []


def read_geojson_polygons(path: Path | str) -> list[AnnotatedPolygon]:
    """Polygons (and multi-polygon parts) of a QuPath GeoJSON export.

    ``properties.classification.name`` gives the class. Non-polygon geometries
    are ignored. ``ConfigError`` when the file is missing or not valid GeoJSON.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read GeoJSON ({str(exc).splitlines()[0]})") from None
    polygons: list[AnnotatedPolygon] = []
    for feat in _features(data):
        geom = feat.get("geometry") or {}
        name = _class_name(feat.get("properties"))
        gtype, coords = geom.get("type"), geom.get("coordinates")
        if gtype == "Polygon":
            parts = [coords]
        elif gtype == "MultiPolygon":
            parts = list(coords or [])
        else:
            continue
        for rings in parts:
            if not rings:
                continue
            polygons.append(AnnotatedPolygon(
                _ring(rings[0], path), tuple(_ring(r, path) for r in rings[1:]), name))
    return polygons


def points_in_polygon(points_xy: npt.NDArray[np.floating], polygon: AnnotatedPolygon) -> npt.NDArray[np.bool_]:
    """(N,) bool: which (N,2) level-0 points lie inside ``polygon`` (exterior minus holes)."""
    from matplotlib.path import Path as MplPath

    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    inside = MplPath(polygon.exterior).contains_points(pts)
    for hole in polygon.holes:
        if inside.any():
            inside &= ~MplPath(hole).contains_points(pts)
    return inside


def tile_centres(coords: Coords, patch_size_level0: int) -> npt.NDArray[np.float64]:
    """(N,2) float64 level-0 centres of tiles with top-left ``coords`` and side ``patch_size_level0``."""
    return np.asarray(coords, dtype=np.float64).reshape(-1, 2) + patch_size_level0 / 2.0


def tumour_membership(
    coords: Coords, patch_size_level0: int, polygons: list[AnnotatedPolygon]
) -> tuple[npt.NDArray[np.bool_], list[str | None]]:
    """Per tile: inside any polygon (N,) bool, and the class name of the containing polygon (or None)."""
    centres = tile_centres(coords, patch_size_level0)
    inside = np.zeros(len(centres), dtype=bool)
    names: list[str | None] = [None] * len(centres)
    for poly in polygons:
        hit = points_in_polygon(centres, poly) & ~inside
        for i in np.flatnonzero(hit):
            names[i] = poly.class_name
        inside |= hit
    return inside, names


def tile_labels(
    coords: Coords, patch_size_level0: int, polygons: list[AnnotatedPolygon],
    slide_label: str, tile_class_names: list[str],
) -> npt.NDArray[np.int64]:
    """(N,) int64 tile labels indexing ``tile_class_names``.

    Tiles whose centre lies inside a tumour polygon take the polygon's class when
    it is a known tile class, else ``slide_label``; other tiles take ``non_tumour``.
    """
    if NON_TUMOUR not in tile_class_names:
        raise ConfigError(f"tile classes {tile_class_names} lack '{NON_TUMOUR}'")
    index = {name: i for i, name in enumerate(tile_class_names)}
    if slide_label not in index:
        raise ConfigError(f"slide label '{slide_label}' is not a tile class {tile_class_names}")
    inside, names = tumour_membership(coords, patch_size_level0, polygons)
    labels = np.full(len(inside), index[NON_TUMOUR], dtype=np.int64)
    for i in np.flatnonzero(inside):
        name = names[i]
        labels[i] = index[name] if name in index and name != NON_TUMOUR else index[slide_label]
    return labels
