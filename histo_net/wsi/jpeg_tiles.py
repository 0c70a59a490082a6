"""Decode-once reader for tiled JPEG pyramids (Aperio SVS, generic tiled TIFF).

Raw tile bytes come straight from the file (offsets and byte counts read once
with ``tifffile``), are decoded by libjpeg-turbo (``simplejpeg``, strict: every
libjpeg warning is an error, as in OpenSlide) and kept in a small LRU of
decoded tiles, so reading regions in raster order decodes each source tile
about once. Regions are assembled the way OpenSlide paints them, so the pixels
are OpenSlide's:

* the JPEG colour space is forced from the TIFF photometric tag and JPEGTables
  are spliced in front of abbreviated tiles (:mod:`histo_net.wsi.jpeg_stream`);
* pixels of edge tiles beyond the level's width/height, and everything beyond
  the tile grid, are white (OpenSlide: transparent, composited on white);
* a region whose level-0 origin is not a whole number of level pixels is
  resampled with pixman's 7-bit bilinear weights tile by tile
  (:func:`histo_net.wsi.pixels.paint_bilinear_shift`), as cairo does in OpenSlide;
* regions larger than 4096 px are painted in OpenSlide's 4096 px chunks.

Which slides and levels qualify is decided by :func:`probe_jpeg_levels` (levels
mapped to TIFF pages with OpenSlide's own rules and checked against its level
dimensions); anything else, and any tile that fails to decode, is left to
OpenSlide by :mod:`histo_net.wsi.slide`. The file is opened lazily per process.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histo_net.types import RGBImage
from histo_net.wsi.jpeg_stream import JpegTileError, decode_tile, splice_tile, tables_prefix
from histo_net.wsi.pixels import paint_bilinear_saturate, premultiplied_to_rgb

__all__ = ["READER_NAME", "JpegLevel", "JpegTileError", "JpegTileReader", "probe_jpeg_levels"]

log = logging.getLogger(__name__)

READER_NAME = "tifffile-jpeg"
#: most memory the decoded-tile LRU of one reader (one per process / DataLoader worker) holds
DEFAULT_CACHE_MIB = 96.0
#: ...and at most this many level-0 tile rows: raster-order regions re-use the band of tile
#: rows the previous row of regions touched (LRU: all of it must stay, about 3 rows)
CACHE_TILE_ROWS = 4
#: OpenSlide paints regions in chunks of at most this many level px per side
OPENSLIDE_CHUNK_PX = 4096
_JPEG, _RGB, _YCBCR, _CONTIG = 7, 2, 6, 1


@dataclass(frozen=True)
class JpegLevel:
    """One pyramid level stored as a JPEG-tiled TIFF page (sizes in level px)."""

    page: int
    width: int
    height: int
    tile_w: int
    tile_h: int
    tiles_across: int
    tiles_down: int
    offsets: np.ndarray      # (tiles_across * tiles_down,) int64 file offsets, row-major
    bytecounts: np.ndarray   # (tiles_across * tiles_down,) int64 byte counts
    prefix: bytes            # SOI + JPEGTables segments + Adobe colour-transform marker


# ------------------------------------------------------------------------- probing
def _page_level(tif: Any, index: int) -> JpegLevel | None:
    """The page as a JpegLevel when it is a JPEG-tiled 8-bit 3-sample contiguous RGB/YCbCr page."""
    page = tif.pages[index]
    ok = (page.is_tiled and int(page.compression) == _JPEG and int(page.planarconfig) == _CONTIG
          and int(page.photometric) in (_RGB, _YCBCR) and page.samplesperpixel == 3
          and int(np.max(page.bitspersample)) == 8 and getattr(page, "imagedepth", 1) == 1
          and page.tilewidth > 0 and page.tilelength > 0)
    if not ok:
        return None
    across = -(-page.imagewidth // page.tilewidth)
    down = -(-page.imagelength // page.tilelength)
    offsets = np.asarray(page.dataoffsets, np.int64)
    counts = np.asarray(page.databytecounts, np.int64)
    if len(offsets) != across * down or len(counts) != len(offsets) or counts.min(initial=1) <= 0:
        return None  # missing (zero-length) tiles: OpenSlide renders them from another level
    try:
        prefix = tables_prefix(page.jpegtables, int(page.photometric) == _YCBCR)
    except JpegTileError:
        return None
    return JpegLevel(index, int(page.imagewidth), int(page.imagelength), int(page.tilewidth),
                     int(page.tilelength), across, down, offsets, counts, prefix)


def _openslide_pages(tif: Any, vendor: str) -> list[int]:
    """TIFF page indices of OpenSlide's levels, in level order (aperio / generic-tiff rules)."""
    pages = tif.pages
    if vendor == "aperio":  # every tiled directory, in file order
        return [i for i in range(len(pages)) if pages[i].is_tiled]
    tiled = [i for i in range(len(pages)) if pages[i].is_tiled
             and (i == 0 or int(pages[i].subfiletype) & 1)]
    return sorted(tiled, key=lambda i: -int(pages[i].imagewidth))  # stable, like g_ptr_array_sort


def probe_jpeg_levels(path: Path, vendor: str | None,
                      level_dimensions: tuple[tuple[int, int], ...]) -> tuple[JpegLevel, ...] | None:
    """One JpegLevel per OpenSlide level, or None when this reader cannot serve the slide.

    Served: vendor ``aperio`` or ``generic-tiff``, every level a JPEG-tiled page
    without missing tiles, and the pages chosen by OpenSlide's rules having
    exactly OpenSlide's level dimensions.
    """
    if vendor not in ("aperio", "generic-tiff"):
        return None
    try:
        import simplejpeg  # noqa: F401  the decoder; without it OpenSlide reads everything
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            pages = _openslide_pages(tif, vendor)
            if len(pages) != len(level_dimensions):
                return None
            levels = []
            for index, dims in zip(pages, level_dimensions):
                level = _page_level(tif, index)
                if level is None or (level.width, level.height) != tuple(dims):
                    return None
                levels.append(level)
    except Exception as exc:  # noqa: BLE001  anything tifffile cannot parse stays on OpenSlide
        log.debug("%s: not served by the JPEG tile reader: %s", path, exc)
        return None
    return tuple(levels)


# ------------------------------------------------------------------------- reading
class JpegTileReader:
    """Regions of a JPEG-tiled pyramid, pixel-equal to OpenSlide's ``read_region``.

    ``downsamples`` are OpenSlide's level downsamples (the same doubles, so
    fractional level positions match). The LRU holds at most ``cache_mib`` and at
    most ``CACHE_TILE_ROWS`` rows of level-0 tiles. The file is opened lazily in the
    process that reads; a forked copy starts afresh.
    """

    name = READER_NAME

    def __init__(self, path: Path, levels: tuple[JpegLevel, ...], downsamples: tuple[float, ...],
                 cache_mib: float = DEFAULT_CACHE_MIB) -> None:
        self.path = Path(path)
        self.levels = levels
        self.downsamples = downsamples
        row_bytes = levels[0].tiles_across * levels[0].tile_w * levels[0].tile_h * 3
        self.cache_bytes = int(min(cache_mib * 2**20, CACHE_TILE_ROWS * row_bytes))
        self._cache: OrderedDict[tuple[int, int], RGBImage] = OrderedDict()
        self._cached_bytes = 0
        self._fd: int | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.tiles_decoded = 0
        self.tiles_touched = 0

    # -------------------------------------------------------------- lifecycle
    def _check_process(self) -> None:
        """In a forked copy, never share the parent's descriptor, cache or lock state."""
        if self._pid != os.getpid():
            self._fd, self._pid, self._lock = None, os.getpid(), threading.Lock()
            self._drop_cache()

    def _file(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise JpegTileError(f"cannot open: {exc.strerror}") from None
        return self._fd

    def _drop_cache(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0

    def reset(self) -> None:
        """Close the file and empty the cache (after a failed read, like OpenSlide's reopen)."""
        self._check_process()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            self._drop_cache()

    close = reset

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_fd=None, _cache=OrderedDict(), _cached_bytes=0)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _pid=os.getpid())

    # ----------------------------------------------------------------- tiles
    def _tile(self, level: int, col: int, row: int) -> RGBImage:
        """Decoded (tile_h, tile_w, 3) source tile from the LRU, decoding it on a miss."""
        self.tiles_touched += 1
        key = (level, row * self.levels[level].tiles_across + col)
        rgb = self._cache.get(key)
        if rgb is not None:
            self._cache.move_to_end(key)
            return rgb
        lv = self.levels[level]
        index = key[1]
        count = int(lv.bytecounts[index])
        data = os.pread(self._file(), count, int(lv.offsets[index]))
        if len(data) != count:
            raise JpegTileError(f"short read of tile {index} ({len(data)} of {count} bytes)")
        rgb = decode_tile(splice_tile(lv.prefix, data), lv.tile_w, lv.tile_h)
        self.tiles_decoded += 1
        self._cache[key] = rgb
        self._cached_bytes += rgb.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
        return rgb

    def serves(self, xy_level0: tuple[int, int], level: int) -> bool:
        """True when :meth:`read_region` handles this request (non-negative origin, known level)."""
        return 0 <= level < len(self.levels) and xy_level0[0] >= 0 and xy_level0[1] >= 0

    def read_region(self, xy_level0: tuple[int, int], level: int, size_wh: tuple[int, int]) -> RGBImage:
        """(h,w,3) uint8 RGB like ``Slide.read_region``; ``JpegTileError`` when a tile fails.

        Thread-safe (one lock per reader: concurrent calls are serialised).
        """
        width, height = int(size_wh[0]), int(size_wh[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {size_wh}")
        self._check_process()
        with self._lock:
            return self._read_locked((int(xy_level0[0]), int(xy_level0[1])), level, width, height)

    def _read_locked(self, xy: tuple[int, int], level: int, width: int, height: int) -> RGBImage:
        x0, y0 = xy
        ds = self.downsamples[level]
        if width <= OPENSLIDE_CHUNK_PX and height <= OPENSLIDE_CHUNK_PX:
            return self._paint(x0 / ds, y0 / ds, level, width, height)
        out = np.empty((height, width, 3), np.uint8)
        step = OPENSLIDE_CHUNK_PX
        for row in range(-(-height // step)):
            for col in range(-(-width // step)):
                sx, sy = int(x0 + col * step * ds), int(y0 + row * step * ds)  # C int64 truncation
                cw, ch = min(width - col * step, step), min(height - row * step, step)
                out[row * step:row * step + ch, col * step:col * step + cw] = self._paint(
                    sx / ds, sy / ds, level, cw, ch)
        return out

    # -------------------------------------------------------------- painting
    def _paint(self, x: float, y: float, level: int, width: int, height: int) -> RGBImage:
        """Region of ``width`` x ``height`` level px whose top-left is at level position (x, y)."""
        fx, fy = _fixed_16_16(x), _fixed_16_16(y)
        if x == math.floor(x) and y == math.floor(y):  # cairo: integer translation, a plain copy
            return self._copy(int(x), int(y), level, width, height)
        return self._bilinear((x, y), fx >> 16, fy >> 16, fx & 0xFFFF, fy & 0xFFFF, level,
                              (width, height))

    def _tile_range(self, lv: JpegLevel, x: float, y: float, width: int, height: int
                    ) -> tuple[range, range]:
        """Tile columns and rows OpenSlide paints for a region at level position (x, y)."""
        c0, r0 = int(x // lv.tile_w), int(y // lv.tile_h)
        c1 = min(math.ceil((x + width) / lv.tile_w), lv.tiles_across)
        r1 = min(math.ceil((y + height) / lv.tile_h), lv.tiles_down)
        return range(c0, c1), range(r0, r1)

    def _copy(self, x: int, y: int, level: int, width: int, height: int) -> RGBImage:
        """Whole-pixel region: slices of decoded tiles, white beyond the level's edges."""
        lv = self.levels[level]
        inside = x + width <= lv.width and y + height <= lv.height
        out = np.empty((height, width, 3), np.uint8) if inside else np.full((height, width, 3), 255,
                                                                               np.uint8)
        cols, rows = self._tile_range(lv, x, y, width, height)
        for row in rows:
            ty = row * lv.tile_h
            sy0, sy1 = max(y, ty), min(y + height, ty + lv.tile_h, lv.height)
            if sy1 <= sy0:
                continue
            for col in cols:
                tx = col * lv.tile_w
                sx0, sx1 = max(x, tx), min(x + width, tx + lv.tile_w, lv.width)
                if sx1 <= sx0:
                    continue
                tile = self._tile(level, col, row)
                out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = tile[sy0 - ty:sy1 - ty, sx0 - tx:sx1 - tx]
        return out

    def _bilinear(self, xy: tuple[float, float], x: int, y: int, frac_x: int, frac_y: int,
                  level: int, size_wh: tuple[int, int]) -> RGBImage:
        """Sub-pixel region: tiles painted one by one in OpenSlide's order (bottom-right first).

        ``xy`` is the exact level position, (x, y) its whole-pixel part and
        (frac_x, frac_y) the 16-bit fractions.
        """
        lv = self.levels[level]
        width, height = size_wh
        dest = np.zeros((height, width, 4), np.uint8)  # premultiplied RGBA, transparent
        cols, rows = self._tile_range(lv, xy[0], xy[1], width, height)
        for row in reversed(rows):
            for col in reversed(cols):
                tile = self._tile(level, col, row)
                valid_w = min(lv.tile_w, lv.width - col * lv.tile_w)
                valid_h = min(lv.tile_h, lv.height - row * lv.tile_h)
                paint_bilinear_saturate(dest, tile[:valid_h, :valid_w], col * lv.tile_w - x,
                                        row * lv.tile_h - y, frac_x, frac_y)
        return premultiplied_to_rgb(dest)


def _fixed_16_16(value: float) -> int:
    """``value`` as 16.16 fixed point, rounded to nearest (cairo's double -> pixman_fixed_t)."""
    return round(value * 65536.0)
