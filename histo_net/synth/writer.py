"""Streaming pyramidal slide writer: Aperio-style SVS or generic pyramidal TIFF.

Level-0 tiles arrive one at a time (row-major) and are JPEG-compressed straight
into the file; only the first reduced level (``downsamples[1]``, 1/4 by default)
is kept in memory to build the lower levels and the thumbnail, so memory stays
about ``width * height * 3 / downsamples[1]**2`` bytes whatever the slide size.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from histo_net.errors import ConfigError
from histo_net.io_utils import atomic_path

log = logging.getLogger(__name__)

TileSource = Iterable[np.ndarray] | Callable[[int, int], np.ndarray]

_APERIO_HEADER = "Aperio Image Library v12.0.15 (histo-net synthetic)"


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """Downsample (H, W, C) uint8 by an integer ``factor`` with a box filter (H, W divisible)."""
    if factor == 1:
        return img
    h, w, c = img.shape
    if c == 3:  # PIL's box reduce: same rounding, several times faster
        return np.asarray(Image.fromarray(img).reduce(factor))
    small = img.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3), dtype=np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def _downsample_any(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-downsample (H, W, 3) uint8 by ``factor``, edge-padding to a multiple first."""
    h, w = img.shape[:2]
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return block_mean(img, factor)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _thumbnail(level: np.ndarray, max_px: int) -> np.ndarray:
    """Box-downsample (H, W, 3) so the longest side is <= max_px (integer factor)."""
    factor = max(1, _ceil_div(max(level.shape[:2]), max_px))
    return _downsample_any(level, factor)


def _validate(width: int, height: int, mpp: float, tile_px: int, fmt: str,
              downsamples: Sequence[int]) -> None:
    if width <= 0 or height <= 0:
        raise ConfigError(f"slide size {width}x{height}: width and height must be > 0")
    if not mpp > 0:
        raise ConfigError(f"mpp={mpp}: must be > 0")
    if fmt not in ("svs", "tiff"):
        raise ConfigError(f"format {fmt!r}: expected 'svs' or 'tiff'")
    if tile_px % 16 or tile_px <= 0:
        raise ConfigError(f"tile_px={tile_px}: must be a positive multiple of 16")
    ds = list(downsamples)
    if len(ds) < 2 or ds[0] != 1 or any(b <= a for a, b in itertools.pairwise(ds)):
        raise ConfigError(f"downsamples={ds}: must start at 1 and increase")
    if tile_px % ds[1] or any(d % ds[1] for d in ds[1:]):
        raise ConfigError(f"downsamples={ds}: must divide tile_px={tile_px} and be multiples of {ds[1]}")


def write_pyramidal_slide(
    path: Path,
    tiles: TileSource,
    *,
    width: int,
    height: int,
    mpp: float,
    tile_px: int = 256,
    fmt: str = "svs",
    app_mag: float = 40.0,
    jpeg_quality: int = 85,
    downsamples: Sequence[int] = (1, 4, 16),
    thumbnail_max_px: int = 1024,
) -> None:
    """Write a tiled, JPEG-compressed pyramidal slide that OpenSlide opens.

    ``tiles`` yields level-0 tiles in row-major order (or is ``f(tx, ty)``), each
    (tile_px, tile_px, 3) uint8 covering level-0 pixels from (tx*tile_px, ty*tile_px);
    edge tiles are full size and cropped by the file's width/height.
    ``fmt="svs"``: Aperio ImageDescription with ``AppMag`` and ``MPP`` (OpenSlide vendor
    "aperio"), level 0, a thumbnail page, then the reduced levels.
    ``fmt="tiff"``: generic pyramidal TIFF, resolution in pixels per centimetre.
    The file appears atomically under ``path``.
    """
    import tifffile

    _validate(width, height, mpp, tile_px, fmt, downsamples)
    n_tx, n_ty = _ceil_div(width, tile_px), _ceil_div(height, tile_px)
    d1 = int(downsamples[1])
    sub_px = tile_px // d1
    level1_full = np.zeros((n_ty * sub_px, n_tx * sub_px, 3), np.uint8)

    def tile_iter() -> Iterator[np.ndarray]:
        if callable(tiles):
            source: Iterable[np.ndarray] = (tiles(tx, ty) for ty in range(n_ty) for tx in range(n_tx))
        else:
            source = tiles
        count = 0
        for tile in source:
            if count >= n_tx * n_ty:
                raise ConfigError(f"{path}: tile source yielded more than {n_tx * n_ty} tiles")
            tile = np.asarray(tile)
            if tile.shape != (tile_px, tile_px, 3) or tile.dtype != np.uint8:
                raise ConfigError(f"{path}: tile {count} has shape {tile.shape} {tile.dtype}, "
                                  f"expected ({tile_px}, {tile_px}, 3) uint8")
            ty, tx = divmod(count, n_tx)
            level1_full[ty * sub_px:(ty + 1) * sub_px, tx * sub_px:(tx + 1) * sub_px] = block_mean(tile, d1)
            count += 1
            yield tile
        if count != n_tx * n_ty:
            raise ConfigError(f"{path}: tile source yielded {count} tiles, expected {n_tx * n_ty}")

    res_per_cm = 1e4 / mpp
    common = {
        "photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": int(jpeg_quality)},
        "metadata": None, "resolution": (res_per_cm, res_per_cm), "resolutionunit": "CENTIMETER",
    }
    bigtiff = width * height * 3 > 2**31
    with atomic_path(Path(path)) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        desc0 = (f"{_APERIO_HEADER}\r\n{width}x{height} [0,0 {width}x{height}] "
                 f"({tile_px}x{tile_px}) JPEG/RGB Q={jpeg_quality}|AppMag = {app_mag:g}"
                 f"|MPP = {mpp:.6f}|Filename = synthetic") if fmt == "svs" else "histo-net synthetic slide"
        tif.write(tile_iter(), shape=(height, width, 3), dtype=np.uint8, tile=(tile_px, tile_px),
                  description=desc0, **common)
        level1 = level1_full[:_ceil_div(height, d1), :_ceil_div(width, d1)]
        if fmt == "svs":
            thumb = _thumbnail(level1, thumbnail_max_px)
            tif.write(thumb, description=f"{_APERIO_HEADER}\r\n{width}x{height} -> "
                      f"{thumb.shape[1]}x{thumb.shape[0]} - |AppMag = {app_mag:g}|MPP = {mpp:.6f}",
                      rowsperstrip=16, photometric="rgb", compression="jpeg",
                      compressionargs={"level": 90}, metadata=None)
        for d in downsamples[1:]:
            level = _downsample_any(level1, d // d1)
            lh, lw = _ceil_div(height, d), _ceil_div(width, d)
            level = level[:lh, :lw]
            desc = (f"{_APERIO_HEADER}\r\n{width}x{height} [0,0 {width}x{height}] ({tile_px}x{tile_px})"
                    f" -> {lw}x{lh} JPEG/RGB Q={jpeg_quality}|AppMag = {app_mag:g}|MPP = {mpp:.6f}"
                    if fmt == "svs" else "histo-net synthetic slide level")
            tif.write(level, tile=(tile_px, tile_px), description=desc, subfiletype=1,
                      **{**common, "resolution": (res_per_cm / d, res_per_cm / d)})
    log.debug("wrote %s (%dx%d, %s, levels %s)", path, width, height, fmt, list(downsamples))
