"""histo_net.wsi.slide: opening, mpp resolution, level choice, tile reads, thumbnails, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_net.errors import MissingMPPError, SlideOpenError, SlideReadError
from histo_net.wsi import slide as slide_mod
from histo_net.wsi.handles import READER_ENV
from histo_net.wsi.pixels import resize_tile
from histo_net.wsi.slide import ReadPlan, Slide, open_slide
from tests.slide_fixtures import (
    area_resize_reference,
    he_like_image,
    make_folder_named,
    write_empty_file,
    write_png,
    write_pyramidal_tiff,
    write_random_bytes,
    write_truncated_copy,
)

H, W = 1024, 1536


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("slides")
    rgb, _ = he_like_image(H, W, seed=1)
    write_pyramidal_tiff(d / "generic.tif", rgb, mpp=0.5)
    write_pyramidal_tiff(d / "lossless.tif", rgb, mpp=0.25, compression="zlib")
    write_pyramidal_tiff(d / "inch.tif", rgb, mpp=0.25, resolution_unit="INCH")
    write_pyramidal_tiff(d / "aperio.svs", rgb, mpp=0.2527, aperio=True)
    write_pyramidal_tiff(d / "nompp.tif", rgb, mpp=None)
    np.save(d / "rgb.npy", rgb)
    return d


def test_mpp_sources(slide_dir: Path) -> None:
    with open_slide(slide_dir / "generic.tif") as s:
        assert (s.mpp, s.mpp_source, s.vendor) == (pytest.approx(0.5), "tiff-resolution", "generic-tiff")
        assert s.dimensions == (W, H) and s.level_count == 3
        assert s.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
    with open_slide(slide_dir / "inch.tif") as s:
        assert s.mpp == pytest.approx(0.25) and s.mpp_source == "tiff-resolution"
    with open_slide(slide_dir / "aperio.svs") as s:
        assert (s.mpp, s.mpp_source, s.vendor) == (pytest.approx(0.2527), "metadata", "aperio")
    with open_slide(slide_dir / "aperio.svs", mpp_override=0.3) as s:
        assert (s.mpp, s.mpp_source) == (0.3, "override")


def test_missing_and_implausible_mpp(slide_dir: Path) -> None:
    with pytest.raises(MissingMPPError, match="--mpp") as info:
        open_slide(slide_dir / "nompp.tif")
    assert "nompp.tif" in str(info.value) and "\n" not in str(info.value)
    with open_slide(slide_dir / "nompp.tif", require_mpp=False) as s:
        assert np.isnan(s.mpp) and s.mpp_source == "none"
    with open_slide(slide_dir / "nompp.tif", mpp_override=0.5) as s:
        assert s.mpp_source == "override"
    for bad in (0.01, 50.0):
        with pytest.raises(MissingMPPError, match="implausible"):
            open_slide(slide_dir / "generic.tif", mpp_override=bad)


@pytest.mark.parametrize(
    ("target_mpp", "level", "read_size_px", "patch_l0"),
    [
        (0.5, 0, 224, 224),    # native
        (1.0, 1, 224, 448),    # exact level 1
        (1.05, 1, 235, 470),   # slightly coarser than level 1: read level 1, downscale
        (2.15, 2, 241, 963),   # level 2 (2.0 um/px) within 10% of 2.15? yes -> read there
        (0.95, 1, 213, 426),   # level 1 (1.0) is within tolerance of 0.95 -> slight upsample
        (0.8, 0, 358, 358),    # level 1 too coarse -> level 0
        (0.25, 0, 112, 112),   # finer than the slide: upsample from level 0
    ],
)
def test_read_plan_level_choice(slide_dir: Path, target_mpp: float, level: int,
                                read_size_px: int, patch_l0: int) -> None:
    with open_slide(slide_dir / "generic.tif") as s:
        plan = s.read_plan(target_mpp, 224, tolerance=0.1)
    assert (plan.level, plan.read_size_px, plan.patch_size_level0) == (level, read_size_px, patch_l0)
    assert plan.tile_size_px == 224 and plan.level_downsample == pytest.approx(2.0**level)


def test_read_tile_matches_region_and_resizes(slide_dir: Path) -> None:
    rgb = np.load(slide_dir / "rgb.npy")
    with open_slide(slide_dir / "lossless.tif") as s:  # lossless: compare pixels exactly
        native = s.read_tile((300, 200), s.read_plan(0.25, 64))
        assert native.shape == (64, 64, 3) and native.dtype == np.uint8
        assert native.flags.writeable and native.flags.c_contiguous
        np.testing.assert_array_equal(native, rgb[200:264, 300:364])
        plan = s.read_plan(0.4, 64)  # level 0 (0.25) -> 102 px read, resized to 64
        assert (plan.level, plan.read_size_px) == (0, 102)
        tile = s.read_tile((300, 200), plan)
        assert tile.flags.writeable
        expected = area_resize_reference(rgb[200:302, 300:402], (64, 64))
        assert np.abs(tile - expected).mean() < 1.5  # area average (bilinear residual)
        level1 = s.read_tile((300, 200), s.read_plan(0.5, 64))
        np.testing.assert_array_equal(level1, s.read_region((300, 200), 1, (64, 64)))
        # the native (premultiplied ARGB) path and openslide-python's public RGBA path agree
        public = np.asarray(s._handle.read_region((W - 40, 200), 0, (64, 64)))
        ours = s.read_region((W - 40, 200), 0, (64, 64))
        np.testing.assert_array_equal(ours[:, :40], public[:, :40, :3])
        assert (ours[:, 40:] == 255).all() and (public[:, 40:, 3] == 0).all()


def test_beyond_edge_is_white(slide_dir: Path) -> None:
    with open_slide(slide_dir / "generic.tif") as s:
        tile = s.read_tile((W - 20, H - 20), s.read_plan(0.5, 64))
    assert tile.shape == (64, 64, 3)
    assert (tile[25:, :] == 255).all() and (tile[:, 25:] == 255).all()
    assert not (tile[:15, :15] == 255).all()


def test_rgba_png_composited_on_white(tmp_path: Path) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[...] = (200, 20, 40)
    alpha = np.full((40, 60), 255, np.uint8)
    alpha[:, :20] = 0
    alpha[:, 20:40] = 128
    path = write_png(tmp_path / "rgba.png", rgb, alpha)
    with pytest.raises(MissingMPPError):
        open_slide(path)
    with open_slide(path, mpp_override=0.5) as s:
        assert s.mpp_source == "override" and s.vendor is None and s.level_count == 1
        out = s.read_region((0, 0), 0, (60, 40))
    assert (out[:, :20] == 255).all()
    np.testing.assert_allclose(out[5, 30], [228, 137, 147], atol=2)
    np.testing.assert_array_equal(out[:, 40:], rgb[:, 40:])


def test_thumbnail_budget_and_chunking(slide_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = np.load(slide_dir / "rgb.npy")
    with open_slide(slide_dir / "lossless.tif") as s:
        thumb, ds = s.thumbnail(300)
        assert max(thumb.shape[:2]) <= 300 and thumb.dtype == np.uint8
        assert ds == pytest.approx(W / 300)
        # content agrees with a direct downscale of level 0
        ref = np.asarray(Image.fromarray(rgb).resize((thumb.shape[1], thumb.shape[0]),
                                                     Image.Resampling.BOX)).astype(float)
        assert np.abs(thumb.astype(float) - ref).mean() < 6
        # small chunks: same picture, and no read larger than the chunk budget
        sizes: list[tuple[int, int]] = []
        real = s._read_once

        def spy(loc: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
            sizes.append(size)
            return real(loc, level, size)

        monkeypatch.setattr(s, "_read_once", spy)
        monkeypatch.setattr(slide_mod, "THUMBNAIL_CHUNK_PX", 128)
        chunked, ds2 = s.thumbnail(300)
    assert ds2 == ds and chunked.shape == thumb.shape
    assert len(sizes) > 4 and max(max(sz) for sz in sizes) <= 130
    assert np.abs(chunked.astype(float) - thumb.astype(float)).mean() < 3


class _BrokenHandle:
    """Stands in for an OpenSlide handle stuck in an error state."""

    def read_region(self, *args: object) -> None:
        import openslide

        raise openslide.OpenSlideError("TIFFRGBAImageGet failed")

    def close(self) -> None:
        pass


def _break(slide: Slide) -> None:
    slide._handle = _BrokenHandle()
    slide._native = None
    if slide._tiles is not None:  # the JPEG tile reader fails too, so OpenSlide is asked
        slide._tiles.reset()
        slide._tiles.path = slide.path.parent / "missing-file"


@pytest.mark.parametrize("reader", ["openslide", "auto"])
def test_read_error_reopens_once_then_raises(slide_dir: Path, tmp_path: Path, reader: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(READER_ENV, reader)  # "auto": the JPEG tile reader serves reads
    with open_slide(slide_dir / "generic.tif") as s:
        assert s.reader_name == ("openslide" if reader == "openslide" else "tifffile-jpeg")
        plan = s.read_plan(0.5, 64)
        expected = s.read_tile((100, 100), plan)
        _break(s)  # broken handle: reopened, read succeeds
        np.testing.assert_array_equal(s.read_tile((100, 100), plan), expected)
    copy = tmp_path / "copy.tif"
    copy.write_bytes((slide_dir / "generic.tif").read_bytes())
    with open_slide(copy) as s:
        _break(s)
        copy.write_bytes(b"")  # the file is gone bad: reopening fails too
        with pytest.raises(SlideReadError, match="copy.tif"):
            s.read_tile((0, 0), s.read_plan(0.5, 64))


def test_bad_inputs_raise_slide_open_error(slide_dir: Path, tmp_path: Path) -> None:
    bad = {
        "empty": write_empty_file(tmp_path / "empty.svs"),
        "random": write_random_bytes(tmp_path / "random.svs"),
        "truncated": write_truncated_copy(slide_dir / "generic.tif", tmp_path / "cut.tif"),
        "folder": make_folder_named(tmp_path / "x.svs"),
        "missing": tmp_path / "missing.svs",
    }
    for kind, path in bad.items():
        with pytest.raises(SlideOpenError) as info:
            open_slide(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message, kind


def test_read_plan_dataclass_is_frozen() -> None:
    plan = ReadPlan(0.5, 224, 0, 1.0, 224, 224)
    with pytest.raises(AttributeError):
        plan.level = 1  # type: ignore[misc]


def test_plain_single_image_tiff_uses_resolution_tags(tmp_path: Path) -> None:
    import tifffile

    rgb, _ = he_like_image(200, 300, seed=2)
    good, dpi72 = tmp_path / "plain.tif", tmp_path / "plain72.tif"
    tifffile.imwrite(good, rgb, photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER", metadata=None)
    tifffile.imwrite(dpi72, rgb, photometric="rgb", resolution=(72, 72), resolutionunit="INCH",
                     metadata=None)
    with open_slide(good) as s:
        assert s.vendor is None and (s.mpp, s.mpp_source) == (pytest.approx(0.5), "tiff-resolution")
        np.testing.assert_array_equal(s.read_region((10, 20), 0, (30, 40)), rgb[20:60, 10:40])
    with pytest.raises(MissingMPPError, match="implausible"):  # 72 dpi = 353 um/px: a default
        open_slide(dpi72)


def test_thumbnail_reads_a_slightly_coarser_level_directly(slide_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with open_slide(slide_dir / "lossless.tif") as s:  # levels 1, 2, 4
        levels: list[int] = []
        real = s._read_once

        def spy(loc: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
            levels.append(level)
            return real(loc, level, size)

        monkeypatch.setattr(s, "_read_once", spy)
        thumb, ds = s.thumbnail(400)  # wants ds 3.84: level 2 (ds 4) is within 25%
    assert ds == 4.0 and thumb.shape[:2] == (H // 4, W // 4) and set(levels) == {2}


def test_truncated_real_svs_fails_quietly(cmu_svs: Path, tmp_path: Path) -> None:
    import warnings

    cut = write_truncated_copy(cmu_svs, tmp_path / "cut.svs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SlideOpenError, match="cut.svs"):
            open_slide(cut)
    assert not caught, [str(w.message) for w in caught]  # no multi-line PIL warnings on stderr


@pytest.mark.parametrize(("src_px", "dst_px", "max_mean_diff"), [
    (448, 224, 0.5),   # integer 2x: exact box average
    (444, 224, 1.5),   # 0.2525 um/px read at 0.5: box 2x (edge-padded) + bilinear
    (449, 224, 2.0),
    (358, 224, 1.5),   # 1.6x: bilinear only
    (963, 241, 1.5),   # 4x
])
def test_resize_tile_is_a_faithful_area_downscale(src_px: int, dst_px: int,
                                                  max_mean_diff: float) -> None:
    rgb, _ = he_like_image(src_px, src_px, seed=3)
    out = resize_tile(rgb, dst_px)
    assert out.shape == (dst_px, dst_px, 3) and out.dtype == np.uint8
    assert np.abs(out - area_resize_reference(rgb, (dst_px, dst_px))).mean() < max_mean_diff
    assert resize_tile(rgb, src_px) is rgb
