"""Tile labels from QuPath GeoJSON polygons (hand-made, with a hole)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from histo_net.errors import ConfigError
from histo_net.train.annotations import read_geojson_polygons, tile_labels, tumour_membership

CLASSES = ["non_tumour", "neuroendocrine", "other_small_round_cell"]


def _write(path: Path) -> Path:
    square = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    hole = [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]
    tri = [[200, 0], [300, 0], [200, 100], [200, 0]]
    data = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square, hole]},
         "properties": {"classification": {"name": "neuroendocrine"}}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[tri]]},
         "properties": {"classification": {"name": "Tumor"}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}},
    ]}
    path.write_text(json.dumps(data))
    return path


def test_tile_labels_centre_in_polygon(tmp_path: Path) -> None:
    polys = read_geojson_polygons(_write(tmp_path / "a.geojson"))
    assert len(polys) == 2 and polys[0].holes and polys[0].class_name == "neuroendocrine"
    # tiles of side 10: centres (15,15) in square, (50,50) in hole, (215,15) in triangle,
    # (285,85) outside triangle, (500,500) outside everything
    coords = np.array([[10, 10], [45, 45], [210, 10], [280, 80], [495, 495]], dtype=np.int64)
    labels = tile_labels(coords, 10, polys, "other_small_round_cell", CLASSES)
    # unknown class 'Tumor' falls back to the slide label
    assert labels.tolist() == [1, 0, 2, 0, 0]
    inside, names = tumour_membership(coords, 10, polys)
    assert inside.tolist() == [True, False, True, False, False]
    assert names[0] == "neuroendocrine" and names[1] is None


def test_no_polygons_all_non_tumour() -> None:
    coords = np.zeros((3, 2), dtype=np.int64)
    assert tile_labels(coords, 8, [], "neuroendocrine", CLASSES).tolist() == [0, 0, 0]


def test_bad_geojson_is_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.geojson"):
        read_geojson_polygons(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_geojson_polygons(tmp_path / "missing.geojson")
