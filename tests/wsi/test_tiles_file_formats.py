"""Our tiles h5 read by CLAM's and TRIDENT's own reading patterns (re-implemented here from
their source: CLAM ``dataset_modules/dataset_h5.py`` Whole_Slide_Bag_FP and
``wsi_core/wsi_utils.py`` StitchCoords; TRIDENT ``trident/IO.py`` read_coords /
read_coords_legacy and ``WSIPatcher`` (src/dst magnification -> level-0 patch size))."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest
from PIL import Image

from histo_net.config import TilingConfig
from histo_net.wsi.inputs import SlideSpec
from histo_net.wsi.slide import open_slide
from histo_net.wsi.tiles_file import ensure_tiles, read_tiles_h5
from tests.slide_fixtures import write_test_slide


@pytest.fixture(scope="module", params=[(0.5, 112), (1.0, 64), (0.35, 96)],
            ids=["level1-exact", "level2-exact", "level0-resized"])
def tiled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("fmt")
    slide, _ = write_test_slide(folder / "s.tif", 1024, 1536, mpp=0.25)
    target_mpp, size = request.param
    ensure_tiles(SlideSpec("s", slide), TilingConfig(target_mpp=target_mpp, tile_size_px=size),
                 folder / "tiles", write_qc=False)
    return slide, folder / "tiles" / "s.h5"


def test_clam_reader_pattern(tiled: tuple[Path, Path]) -> None:
    slide_path, h5_path = tiled
    with h5py.File(h5_path, "r") as f:  # Whole_Slide_Bag_FP.__init__
        dset = f["coords"]
        patch_level = f["coords"].attrs["patch_level"]
        patch_size = f["coords"].attrs["patch_size"]
        length = len(dset)
        name = dset.attrs["name"]  # StitchCoords
        w, h = dset.attrs["downsampled_level_dim"]
    wsi = openslide.OpenSlide(str(slide_path))
    assert (w, h) == wsi.level_dimensions[patch_level] and name == "s" and length > 0
    ours = read_tiles_h5(h5_path)
    with h5py.File(h5_path, "r") as f:
        coord = f["coords"][0]  # __getitem__
    img = wsi.read_region(tuple(int(c) for c in coord), int(patch_level),
                          (int(patch_size), int(patch_size))).convert("RGB")
    # CLAM then resizes to its encoder input; the footprint must be ours
    footprint_l0 = int(patch_size) * wsi.level_downsamples[int(patch_level)]
    assert footprint_l0 == pytest.approx(ours.plan.patch_size_level0, abs=2)
    with open_slide(slide_path) as s:
        tile = s.read_tile((int(coord[0]), int(coord[1])), ours.plan)
    clam = np.asarray(img.resize((ours.plan.tile_size_px,) * 2, Image.Resampling.BOX), np.float64)
    assert np.abs(clam - tile).mean() < 6.0  # same pixels, resampled by two resizers


def test_trident_reader_pattern(tiled: tuple[Path, Path]) -> None:
    _, h5_path = tiled
    with h5py.File(h5_path, "r") as f:  # trident.IO.read_coords
        attrs = dict(f["coords"].attrs)
        coords = f["coords"][:]
    patch_size = attrs.get("patch_size", None)
    level0_magnification = attrs.get("level0_magnification", None)
    target_magnification = attrs.get("target_magnification", None)
    assert None not in (patch_size, level0_magnification, target_magnification)  # no legacy path
    src_pixel_size = 10 / level0_magnification  # WSIPatcher.__init__
    dst_pixel_size = 10 / target_magnification
    downsample = dst_pixel_size / src_pixel_size
    patch_size_src = round(patch_size * downsample)
    ours = read_tiles_h5(h5_path)
    assert abs(patch_size_src - ours.plan.patch_size_level0) <= 1
    assert src_pixel_size == pytest.approx(ours.slide_mpp)
    assert int(attrs["patch_size_level0"]) == ours.plan.patch_size_level0
    assert (attrs["level0_width"], attrs["level0_height"]) == ours.level0_size
    np.testing.assert_array_equal(coords, ours.coords)
    with h5py.File(h5_path, "r") as f:  # read_coords_legacy (CLAM layout) agrees too
        legacy = (f["coords"].attrs["patch_size"], f["coords"].attrs["patch_level"],
                  f["coords"].attrs.get("custom_downsample", 1))
    assert legacy == (ours.plan.read_size_px, ours.plan.level, 1)
