"""tiles.geojson against what QuPath 0.5 / 0.6 import (qupath-core ``PathObjectTypeAdapters``
and its GeoJSON ROI reader): structure checked feature by feature, tiles clipped to the
slide, the tissue contour present as an annotation, measurements plain finite numbers."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest

from histo_net.report.geojson import build_geojson, class_colours, tissue_polygons
from tests.report.test_write import TILE_CLASSES, make_report

QUPATH_OBJECT_TYPES = {"annotation", "detection", "tile", "cell", "tmaCore", "root", "unknown",
                       "PathAnnotationObject", "PathDetectionObject", "PathTileObject",
                       "PathCellObject", "TMACoreObject", "PathRootObject"}


def _ring_ok(ring: list, bounds: tuple[int, int]) -> None:
    assert len(ring) >= 4 and ring[0] == ring[-1], ring  # closed linear ring
    for x, y in ring:
        assert isinstance(x, (int, float)) and isinstance(y, (int, float))
        assert 0 <= x <= bounds[0] and 0 <= y <= bounds[1], (x, y, bounds)


def qupath_problems(gj: dict, bounds: tuple[int, int]) -> list[str]:
    """What QuPath's reader would reject or silently mangle in ``gj`` (empty: imports cleanly)."""
    problems = []
    if gj.get("type") != "FeatureCollection" or not isinstance(gj.get("features"), list):
        return ["not a FeatureCollection with a features array"]
    for i, feat in enumerate(gj["features"]):
        try:
            assert feat["type"] == "Feature"
            if "id" in feat:
                uuid.UUID(str(feat["id"]))  # QuPath >= 0.4 reads ids as UUIDs
            geometry = feat["geometry"]
            polygons = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                        else geometry["coordinates"])
            assert geometry["type"] in ("Polygon", "MultiPolygon") and polygons
            for rings in polygons:
                for ring in rings:
                    _ring_ok(ring, bounds)
            props = feat["properties"]
            assert props["objectType"] in QUPATH_OBJECT_TYPES
            assert isinstance(props.get("name", ""), str)
            cls = props.get("classification")
            if cls is not None:
                assert isinstance(cls["name"], str) and len(cls["color"]) == 3
                assert all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
            for key, value in (props.get("measurements") or {}).items():
                # read as Map<String, Double>: null / NaN / strings break the import
                assert isinstance(key, str) and isinstance(value, (int, float))
                assert not isinstance(value, bool) and math.isfinite(value), (key, value)
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"feature {i}: {exc!r}")
    return problems


def test_tiles_and_tissue_import_cleanly_and_edge_tiles_are_clipped() -> None:
    report = make_report()
    report.level0_size = (200, 170)  # 4x4 tiles of 64 px at stride 48 reach 208 px
    gj = build_geojson(report)
    assert json.loads(json.dumps(gj, allow_nan=False)) == gj
    assert qupath_problems(gj, report.level0_size) == []
    tissue, tiles = gj["features"][0], gj["features"][1:]
    assert tissue["properties"]["objectType"] == "annotation"
    assert tissue["properties"]["classification"]["name"] == "Tissue"
    assert len(tiles) == report.tile_count
    colours = class_colours(TILE_CLASSES)
    for i, feat in enumerate(tiles):
        ring = feat["geometry"]["coordinates"][0]
        x, y = (int(v) for v in report.coords_level0[i])
        assert ring[0] == [x, y] and ring[2] == [min(x + 64, 200), min(y + 64, 170)]
        props = feat["properties"]
        assert props["objectType"] == "tile"
        meas = props["measurements"]
        assert meas["attention"] == pytest.approx(report.attention[i])
        if i > 0:
            assert set(meas) == {"attention"} | {f"prob_{c}" for c in TILE_CLASSES}
            best = TILE_CLASSES[int(np.argmax(report.tile_probs[i]))]
            assert props["classification"] == {"name": best, "color": colours[best]}
    assert set(tiles[0]["properties"]["measurements"]) == {"attention"}  # NaN left out


def test_unclipped_file_would_fail_the_check() -> None:
    report = make_report()
    report.level0_size = None  # no bounds known: squares as tiled
    assert qupath_problems(build_geojson(report), (200, 170))  # the checker can fail


def test_tissue_polygons_follow_the_mask_with_holes() -> None:
    mask = np.zeros((40, 60), bool)
    mask[5:35, 5:55] = True
    mask[15:25, 20:30] = False  # a hole
    mask[0:3, 57:60] = True  # a speck in the corner, clipped to the slide
    polygons = tissue_polygons(mask, 10.0, (590, 400))
    big = max(polygons, key=lambda rings: len(rings))
    assert len(big) == 2  # exterior + hole
    xs = [x for x, _ in big[0]]
    ys = [y for _, y in big[0]]
    assert min(xs) == pytest.approx(55) and max(xs) == pytest.approx(545)
    assert min(ys) == pytest.approx(55) and max(ys) == pytest.approx(345)
    assert all(x <= 590 for rings in polygons for ring in rings for x, _ in ring)
