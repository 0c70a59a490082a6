"""histo_net.wsi.tiling: grid from the tissue mask, h5 round trip, QC picture, real slides."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from histo_net.config import TilingConfig
from histo_net.errors import HistoNetError, MissingMPPError, NoTissueError
from histo_net.wsi.slide import open_slide
from histo_net.wsi.tiles_file import read_tiles_h5, write_tiles_h5
from histo_net.wsi.tiling import (
    grid_tissue_fraction,
    tile_slide,
)
from histo_net.wsi.tiling_qc import write_tissue_qc_png
from histo_net.wsi.tissue import saturation
from tests.slide_fixtures import (
    area_resize_reference,
    blank_image,
    write_pyramidal_tiff,
    write_test_slide,
)

DESIGN_ATTRS = {
    "target_mpp", "tile_size_px", "patch_size_level0", "read_level", "read_size_px", "slide_mpp",
    "mpp_source", "level0_width", "level0_height", "tissue_fraction_min", "histo_net_version",
}
MPP = 0.5


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """(pyramidal TIFF 3072x2048 at 0.5 um/px, its level-0 truth mask)."""
    return write_test_slide(tmp_path_factory.mktemp("tiling") / "synth.tif", mpp=MPP)


def _covered(coords: np.ndarray, patch: int, shape_hw: tuple[int, int]) -> np.ndarray:
    cover = np.zeros(shape_hw, bool)
    for x, y in coords:
        cover[y:y + patch, x:x + patch] = True
    return cover


def test_grid_fraction_is_exact_area_weighted() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((23, 31)) > 0.6
    ds = 4.0
    level0 = np.repeat(np.repeat(mask, 4, axis=0), 4, axis=1)
    xs = np.arange(0, 31 * 4, 7, dtype=np.int64)
    ys = np.arange(0, 23 * 4, 9, dtype=np.int64)
    patch = 10  # 2.5 mask px: tiles straddle mask pixels and the edge
    frac = grid_tissue_fraction(mask, ds, xs, ys, patch)
    padded = np.pad(level0, ((0, patch), (0, patch)))
    brute = np.array([[padded[y:y + patch, x:x + patch].mean() for x in xs] for y in ys])
    np.testing.assert_allclose(frac, brute, atol=1e-5)


def test_tiles_lie_on_tissue_and_cover_it(synth: tuple[Path, np.ndarray]) -> None:
    path, truth = synth
    cfg = TilingConfig(tile_size_px=128)
    with open_slide(path) as slide:
        result = tile_slide(slide, cfg)
    coords, patch = result.coords, result.plan.patch_size_level0
    assert coords.dtype == np.int64 and coords.ndim == 2 and coords.shape[1] == 2
    assert patch == 128 and len(coords) == len(result.tissue_fraction) > 50
    assert (coords % 128 == 0).all()
    assert len(np.unique(coords, axis=0)) == len(coords)
    truth_frac = np.array([truth[y:y + patch, x:x + patch].mean() for x, y in coords])
    assert truth_frac.min() > 0.3 and truth_frac.mean() > 0.85  # every kept tile is on tissue
    cover = _covered(coords, patch, truth.shape)
    assert (cover & truth).sum() / truth.sum() > 0.85          # most tissue is covered
    assert (cover & ~truth).sum() / cover.sum() < 0.1           # little glass inside tiles
    assert result.tissue_area_mm2 == pytest.approx(truth.sum() * MPP**2 / 1e6, rel=0.08)
    assert DESIGN_ATTRS <= set(result.attrs)
    assert result.attrs["mpp_source"] == "tiff-resolution"
    assert result.attrs["level0_width"] == 3072 and result.attrs["level0_height"] == 2048


def test_stride_level_and_fraction_options(synth: tuple[Path, np.ndarray]) -> None:
    path, _ = synth
    with open_slide(path) as slide:
        base = tile_slide(slide, TilingConfig(tile_size_px=128))
        overlap = tile_slide(slide, TilingConfig(tile_size_px=128, stride_px=64))
        strict = tile_slide(slide, TilingConfig(tile_size_px=128, min_tissue_fraction=1.0))
        coarse = tile_slide(slide, TilingConfig(tile_size_px=64, target_mpp=1.0))
    assert 3.3 < len(overlap.coords) / len(base.coords) < 4.7
    assert (overlap.coords % 64 == 0).all()
    assert len(strict.coords) < len(base.coords) and (strict.tissue_fraction >= 1.0 - 1e-6).all()
    assert coarse.plan.level == 1 and coarse.plan.patch_size_level0 == 128
    assert coarse.attrs["read_level"] == 1 and coarse.attrs["read_size_px"] == 64


def test_blank_slide_and_missing_mpp(tmp_path: Path) -> None:
    path = write_pyramidal_tiff(tmp_path / "white.tif", blank_image(1024, 1024), mpp=0.5)
    with open_slide(path) as slide, pytest.raises(NoTissueError, match="white.tif"):
        tile_slide(slide, TilingConfig())
    with open_slide(path, require_mpp=False) as slide:
        slide.mpp = float("nan")
        with pytest.raises(MissingMPPError, match="--mpp"):
            tile_slide(slide, TilingConfig())


def test_h5_round_trip_and_settings_match(synth: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = synth
    cfg = TilingConfig(tile_size_px=128)
    with open_slide(path) as slide:
        result = tile_slide(slide, cfg)
    out = tmp_path / "tiles" / "synth.h5"
    write_tiles_h5(out, result)
    assert [p.name for p in out.parent.iterdir()] == ["synth.h5"]  # no temp file left
    tiles = read_tiles_h5(out)
    np.testing.assert_array_equal(tiles.coords, result.coords)
    assert tiles.plan == result.plan and tiles.slide_mpp == MPP
    assert tiles.level0_size == (result.attrs["level0_width"], result.attrs["level0_height"])
    with h5py.File(out, "r") as h5:  # the CLAM / TRIDENT layout
        assert h5["coords"].dtype == np.int64 and h5["coords"].shape == (tiles.n_tiles, 2)
        assert h5["tissue_fraction"].shape == (tiles.n_tiles,)
        assert {k: h5.attrs[k] for k in result.attrs} == result.attrs
    assert tiles.settings_match(cfg, MPP)
    assert not tiles.settings_match(TilingConfig(tile_size_px=256), MPP)
    assert not tiles.settings_match(cfg, 0.25)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(HistoNetError, match="bad.h5"):
        read_tiles_h5(bad)


def test_qc_png(synth: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = synth
    with open_slide(path) as slide:
        result = tile_slide(slide, TilingConfig(tile_size_px=128))
    out = tmp_path / "synth_qc.png"
    write_tissue_qc_png(out, result)
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == result.thumbnail.shape
    green = (picture[..., 1] > 150) & (picture[..., 0] < 60) & (picture[..., 2] < 100)
    blue = (picture[..., 2] > 200) & (picture[..., 0] < 30)
    assert green.sum() > 100 and blue.sum() > 100


# ------------------------------------------------------------------ real data
def test_real_cmu_svs(cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as slide:
        assert slide.mpp_source == "metadata" and slide.mpp == pytest.approx(0.499)
        result = tile_slide(slide, TilingConfig())
        plan = result.plan
        assert (plan.level, plan.read_size_px, plan.patch_size_level0) == (0, 224, 224)
        thumb, ds = result.thumbnail, result.thumbnail_downsample
        # every kept tile is tissue, not glass: coloured pixels on the tile itself
        for x, y in result.coords:
            tile = slide.read_tile((int(x), int(y)), plan)
            assert (saturation(tile) > 0.1).mean() > 0.3, (x, y)
        # glass: thumbnail regions with no stain never get a tile
        glass = saturation(thumb) < 0.04
        cover = _covered((result.coords / ds).astype(int), int(224 / ds), glass.shape)
        assert (cover & glass).sum() / cover.sum() < 0.25
        # tiles cover most of the detected tissue
        mask = result.tissue
        mcover = _covered((result.coords / result.tissue_downsample).astype(int),
                          int(224 / result.tissue_downsample), mask.shape)
        assert (mcover & mask).sum() / mask.sum() > 0.6
        # a coarser target reads a larger level-0 patch and resizes it to the tile size
        plan2 = slide.read_plan(1.0, 224)
        assert (plan2.level, plan2.read_size_px) == (0, 449)
        xy = (int(result.coords[0, 0]), int(result.coords[0, 1]))
        tile2 = slide.read_tile(xy, plan2)
        raw = slide.read_region(xy, 0, (449, 449))
        diff = np.abs(tile2 - area_resize_reference(raw, (224, 224))).mean()
        shifted = np.abs(tile2 - area_resize_reference(raw[8:, 8:], (224, 224))[:, :]).mean()
        assert diff < 15 and shifted > 2 * diff  # same region, area-averaged (<0.5 px drift)
    assert result.attrs["mpp_source"] == "metadata"


def test_real_png_needs_mpp(real_data_dir: Path) -> None:
    png = real_data_dir / "he_tiles" / "tiatoolbox_target_image.png"
    if not png.is_file():
        pytest.skip(f"{png} not found")
    with pytest.raises(MissingMPPError, match="--mpp"):
        open_slide(png)
    with open_slide(png, mpp_override=0.5) as slide:
        result = tile_slide(slide, TilingConfig())
    assert result.attrs["mpp_source"] == "override" and result.attrs["slide_mpp"] == 0.5
    assert len(result.coords) >= 9  # 1000x1000 px of tissue holds 16 full 224 px tiles
