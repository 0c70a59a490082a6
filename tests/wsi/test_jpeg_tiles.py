"""histo_net.wsi.jpeg_tiles: the decode-once JPEG tile reader equals OpenSlide, falls back, fails alike.

Every comparison reads the same regions through ``Slide`` twice: once with the
tile reader ("tifffile-jpeg") and once through OpenSlide
(``HISTO_NET_READER=openslide``). Pixels are expected to be identical (same
libjpeg-turbo algorithm, OpenSlide's cairo/pixman sub-pixel painting reproduced);
the bounds allow ``MAX_DIFF`` for a differently built decoder or pixman (e.g.
fused multiply-add on other CPUs) and require the mean under 1 grey level.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from histo_net.config import TilingConfig, TissueConfig
from histo_net.errors import SlideReadError
from histo_net.wsi import jpeg_stream, jpeg_tiles
from histo_net.wsi.handles import READER_ENV
from histo_net.wsi.slide import Slide, open_slide
from histo_net.wsi.tiling import tile_slide
from tests.slide_fixtures import he_like_image, write_png, write_pyramidal_tiff

#: largest tolerated |difference|: libjpeg-turbo's accurate integer IDCT is bit-exact
#: across its builds (we measure 0), 2 leaves room for +-1 rounding in a luma and a
#: chroma sample or in a float32 bilinear step of a differently compiled pixman
MAX_DIFF = 2
MIN_EQUAL = 0.99  # fraction of identical values required
H, W = 1100, 1300


def _tiles_from(rgb: np.ndarray, tile_px: int) -> Callable[[int, int], np.ndarray]:
    """Level-0 tile source ``f(tx, ty)`` cutting ``rgb`` (edge tiles padded white)."""
    def tile(tx: int, ty: int) -> np.ndarray:
        out = np.full((tile_px, tile_px, 3), 255, np.uint8)
        sub = rgb[ty * tile_px:(ty + 1) * tile_px, tx * tile_px:(tx + 1) * tile_px]
        out[:sub.shape[0], :sub.shape[1]] = sub
        return out
    return tile


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic JPEG pyramids: synth-writer SVS and TIFF (YCbCr 4:2:0, downsamples 1/4/~15.9),
    a 240 px tile TIFF with ~2x levels, and a single-level RGB (Adobe, 4:4:4) tiled TIFF."""
    import tifffile

    from histo_net.synth.writer import write_pyramidal_slide

    d = tmp_path_factory.mktemp("jpeg_slides")
    rgb, _ = he_like_image(H, W, seed=3)
    for fmt in ("svs", "tiff"):
        write_pyramidal_slide(d / f"synth.{fmt}", _tiles_from(rgb, 256), width=W, height=H,
                              mpp=0.25, fmt=fmt)
    write_pyramidal_tiff(d / "halves.tif", rgb[:617, :889], mpp=0.5, tile_px=240)
    tifffile.imwrite(d / "rgb.tif", rgb[:600, :700], tile=(256, 256), compression="jpeg",
                     photometric="rgb", compressionargs={"level": 80, "outcolorspace": "RGB"},
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER", metadata=None)
    write_pyramidal_tiff(d / "lossless.tif", rgb, mpp=0.5, compression="zlib")
    write_png(d / "plain.png", rgb[:200, :300])
    return {p.stem if p.suffix != ".svs" else "svs": p for p in d.iterdir()}


def _pair(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Slide, Slide]:
    """(slide read by the tile reader, same slide read through OpenSlide)."""
    fast = open_slide(path, require_mpp=False)
    with monkeypatch.context() as m:
        m.setenv(READER_ENV, "openslide")
        ref = open_slide(path, require_mpp=False)
    assert ref.reader_name == "openslide"
    return fast, ref


def _regions(slide: Slide) -> list[tuple[tuple[int, int], int, tuple[int, int]]]:
    """Regions crossing tile borders and the right/bottom edge, at every level, whole and fractional."""
    width, height = slide.dimensions
    out = [((0, 0), 0, (448, 448)), ((200, 230), 0, (333, 301)),
           ((width - 150, height - 90), 0, (448, 448)), ((width + 10, 5), 0, (20, 20))]
    for level in range(1, slide.level_count):
        ds = slide.level_downsamples[level]
        out += [((0, 0), level, (120, 90)),
                ((round(256 * ds) - 3, round(250 * ds) + 1), level, (40, 37)),  # fractional, seams
                ((width - round(60 * ds), height - round(40 * ds)), level, (100, 90))]  # edge
    return out


def _assert_equal(a: np.ndarray, b: np.ndarray, what: str) -> None:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert a.shape == b.shape, what
    assert diff.mean() < 1.0 and diff.max() <= MAX_DIFF, (what, diff.mean(), diff.max())
    assert (diff == 0).mean() >= MIN_EQUAL, (what, (diff == 0).mean())


@pytest.mark.parametrize("name", ["svs", "synth", "halves", "rgb"])
def test_regions_equal_openslide(slides: dict[str, Path], name: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fast, ref = _pair(slides[name], monkeypatch)
    assert fast.reader_name == "tifffile-jpeg"
    for loc, level, size in _regions(ref):
        _assert_equal(fast.read_region(loc, level, size), ref.read_region(loc, level, size),
                      f"{name} {loc} level {level} {size}")
    beyond = fast.read_region((fast.dimensions[0] - 10, 0), 0, (30, 5))
    assert (beyond[:, 10:] == 255).all()  # beyond-edge pixels are white
    plan = ref.read_plan(0.5, 224)
    _assert_equal(fast.read_tile((300, 500), plan), ref.read_tile((300, 500), plan), f"{name} tile")


def test_real_svs_equal_openslide(cmu_svs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, ref = _pair(cmu_svs, monkeypatch)  # JPEGTables, RGB photometric, 240 px tiles
    assert fast.vendor == "aperio" and fast.reader_name == "tifffile-jpeg"
    for loc, level, size in _regions(ref):
        _assert_equal(fast.read_region(loc, level, size), ref.read_region(loc, level, size),
                      f"CMU {loc} {size}")
    _assert_equal(fast.thumbnail(512)[0], ref.thumbnail(512)[0], "CMU thumbnail")


@pytest.mark.parametrize("name", ["svs", "halves"])
def test_identical_tile_grids(slides: dict[str, Path], name: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    fast, ref = _pair(slides[name], monkeypatch)
    cfg = TilingConfig(target_mpp=0.5, tile_size_px=64,
                       tissue=TissueConfig(thumbnail_mpp=1.0, min_tissue_area_um2=500.0))
    a, b = tile_slide(fast, cfg), tile_slide(ref, cfg)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.tissue, b.tissue)
    assert len(a.coords) > 20


def test_raster_order_decodes_each_source_tile_once(slides: dict[str, Path]) -> None:
    with open_slide(slides["svs"]) as slide:
        tiles = slide._tiles
        assert tiles is not None
        width, height = slide.dimensions
        for y in range(0, height, 448):
            for x in range(0, width, 448):
                slide.read_region((x, y), 0, (448, 448))
        lv = tiles.levels[0]
        assert tiles.tiles_decoded == lv.tiles_across * lv.tiles_down
        assert tiles.tiles_touched > tiles.tiles_decoded


def test_tiny_cache_still_reads_correctly(slides: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fast, ref = _pair(slides["svs"], monkeypatch)
    assert fast._tiles is not None
    fast._tiles.cache_bytes = 1  # every tile evicted at once: decoded again when needed
    _assert_equal(fast.read_region((100, 100), 0, (700, 600)),
                  ref.read_region((100, 100), 0, (700, 600)), "tiny cache")
    assert len(fast._tiles._cache) == 1


def test_other_formats_stay_on_openslide(slides: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lossless", "plain"):
        with open_slide(slides[name], require_mpp=False) as slide:
            assert slide.reader_name == "openslide", name
    monkeypatch.setenv(READER_ENV, "openslide")
    with open_slide(slides["svs"]) as slide:
        assert slide.reader_name == "openslide"


def test_level_structure_must_match_openslide(slides: dict[str, Path]) -> None:
    with open_slide(slides["svs"]) as slide:
        dims = slide.level_dimensions
    assert jpeg_tiles.probe_jpeg_levels(slides["svs"], "aperio", dims) is not None
    assert jpeg_tiles.probe_jpeg_levels(slides["svs"], "aperio", dims[:2]) is None
    assert jpeg_tiles.probe_jpeg_levels(slides["svs"], "aperio", ((W, H), (1, 1), (1, 1))) is None
    assert jpeg_tiles.probe_jpeg_levels(slides["svs"], "hamamatsu", dims) is None


def _corrupt_copy(src: Path, dst: Path, flip: slice | None) -> tuple[Path, tuple[int, int]]:
    """Copy ``src`` with tile (1, 1) of level 0 damaged; returns the path and that tile's origin.

    ``flip=None`` writes an EOI marker into the middle of the entropy-coded data
    (a cut scan: libjpeg always warns), else inverts the bytes at ``flip`` (fractions
    of the tile's length x 1000).
    """
    import tifffile

    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        index = across + 1
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        origin = (page.tilewidth, page.tilelength)
    data = bytearray(src.read_bytes())
    if flip is None:
        mid = offset + count // 2
        data[mid:mid + 2] = b"\xff\xd9"
    else:
        lo, hi = offset + count * flip.start // 1000, offset + count * flip.stop // 1000
        data[lo:hi] = bytes(255 - b for b in data[lo:hi])
    dst.write_bytes(bytes(data))
    return dst, origin


def _read_or_error(slide: Slide, loc: tuple[int, int]) -> np.ndarray | str:
    try:
        return slide.read_region(loc, 0, (300, 300))
    except SlideReadError as exc:
        return str(exc)


def test_corrupt_tile_same_error_as_openslide(slides: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path, origin = _corrupt_copy(slides["svs"], tmp_path / "cut.svs", None)
    fast, ref = _pair(path, monkeypatch)
    assert fast.reader_name == "tifffile-jpeg"
    loc = (origin[0] + 10, origin[1] + 10)
    with pytest.raises(SlideReadError) as want:
        ref.read_region(loc, 0, (300, 300))
    with pytest.raises(SlideReadError) as got:
        fast.read_region(loc, 0, (300, 300))
    assert str(got.value) == str(want.value)
    assert "cut.svs" in str(got.value) and "\n" not in str(got.value)
    # the slide stays usable: a region away from the broken tile reads equal
    _assert_equal(fast.read_region((700, 700), 0, (200, 200)),
                  ref.read_region((700, 700), 0, (200, 200)), "after error")


@pytest.mark.parametrize("flip", [slice(300, 302), slice(600, 608), slice(900, 901)])
def test_flipped_bytes_behave_like_openslide(slides: dict[str, Path], tmp_path: Path,
                                             flip: slice, monkeypatch: pytest.MonkeyPatch) -> None:
    path, origin = _corrupt_copy(slides["svs"], tmp_path / "flip.svs", flip)
    fast, ref = _pair(path, monkeypatch)
    loc = (origin[0] - 20, origin[1] - 20)
    want, got = _read_or_error(ref, loc), _read_or_error(fast, loc)
    if isinstance(want, str):
        assert got == want  # the same typed error and one-line message
    else:
        assert not isinstance(got, str), got
        _assert_equal(got, want, f"flip {flip}")


def test_reader_pickles_without_its_file_or_cache(slides: dict[str, Path]) -> None:
    with open_slide(slides["svs"]) as slide:
        tiles = slide._tiles
        assert tiles is not None
        first = tiles.read_region((0, 0), 0, (300, 300))
        clone = pickle.loads(pickle.dumps(tiles))
        assert clone._fd is None and not clone._cache
        np.testing.assert_array_equal(clone.read_region((0, 0), 0, (300, 300)), first)
        clone.close()


def test_splice_rejects_bad_tiles() -> None:
    prefix = jpeg_stream.tables_prefix(None, True)
    with pytest.raises(jpeg_stream.JpegTileError, match="SOI"):
        jpeg_stream.splice_tile(prefix, b"\x00\xd8\xff\xda")
    with pytest.raises(jpeg_stream.JpegTileError):
        jpeg_stream.splice_tile(prefix, b"\xff\xd8\xff\xdb\x00")


def test_concurrent_reads_equal_serial_reads(slides: dict[str, Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    locs = [(x, y) for y in range(0, H, 300) for x in range(0, W, 300)]
    with open_slide(slides["svs"]) as slide:
        serial = [slide.read_region(loc, 0, (300, 300)) for loc in locs]
    with open_slide(slides["svs"]) as slide, ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda loc: slide.read_region(loc, 0, (300, 300)), locs))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
