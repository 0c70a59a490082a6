"""Low-level slide handles: OpenSlide/ImageSlide opening with typed errors, and the pixel readers.

``open_handle`` decides between OpenSlide (WSI formats, never a plain-image fallback for
them) and ImageSlide (plain images) and probes the far corner for truncation;
``native_reader`` reads OpenSlide regions straight into numpy; ``tile_reader`` gives the
decode-once JPEG reader when it can serve a slide exactly. Only :mod:`histo_net.wsi.slide`
uses this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from histo_net.errors import SlideOpenError
from histo_net.types import RGBImage
from histo_net.wsi.file_checks import check_dicom_folder, tiff_structure_problem
from histo_net.wsi.jpeg_tiles import JpegTileReader, probe_jpeg_levels
from histo_net.wsi.pixels import bgra_shuffle, premultiplied_argb_to_rgb

log = logging.getLogger(__name__)

OPENSLIDE_READER = "openslide"
#: environment variable: "openslide" reads every slide through OpenSlide (default "auto")
READER_ENV = "HISTO_NET_READER"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def native_reader(handle: Any) -> Callable[[tuple[int, int], int, tuple[int, int]], RGBImage] | None:
    """Direct ``openslide_read_region`` into a numpy buffer, or None (ImageSlide / other API).

    Skips openslide-python's un-premultiply and PIL round trip; errors still raise
    ``OpenSlideError`` through the library's own error check.
    """
    import ctypes

    import openslide
    from openslide import lowlevel

    raw = getattr(lowlevel, "_read_region", None)
    osr = getattr(handle, "_osr", None)
    if not isinstance(handle, openslide.OpenSlide) or raw is None or osr is None:
        return None
    pointer = ctypes.POINTER(ctypes.c_uint32)
    shuffle = bgra_shuffle()

    def read(loc: tuple[int, int], level: int, size: tuple[int, int]) -> RGBImage:
        width, height = size
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        buf = np.empty((height, width), np.uint32)
        raw(osr, buf.ctypes.data_as(pointer), loc[0], loc[1], level, width, height)
        return premultiplied_argb_to_rgb(buf, shuffle)

    return read


def tile_reader(path: Path, vendor: str | None, level_dimensions: tuple[tuple[int, int], ...],
                 level_downsamples: tuple[float, ...]) -> JpegTileReader | None:
    """The decode-once JPEG tile reader when it can serve this slide exactly, else None."""
    if os.environ.get(READER_ENV, "auto").strip().lower() == OPENSLIDE_READER:
        return None
    levels = probe_jpeg_levels(path, vendor, level_dimensions)
    return None if levels is None else JpegTileReader(path, levels, level_downsamples)


def probe(handle: Any) -> None:
    """Decode one pixel at the far corner of level 0 and the coarsest level (catches truncation)."""
    width, height = handle.dimensions
    last = handle.level_count - 1
    handle.read_region((max(0, width - 1), max(0, height - 1)), 0, (1, 1))
    if last > 0:
        handle.read_region((0, 0), last, (1, 1))


def detect_vendor(path: Path) -> str | None:
    """OpenSlide's format name for ``path`` ("aperio", "generic-tiff", "dicom", ...), None otherwise."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception as exc:  # noqa: BLE001  undetectable: not a format OpenSlide knows
        log.debug("%s: detect_format failed: %s", path, exc)
        return None


def open_handle(path: Path) -> Any:
    """OpenSlide handle (WSI formats) or ImageSlide (plain images), probed; typed errors.

    A file OpenSlide identifies as a WSI format but cannot open fails: it is never
    handed to the plain-image reader (which would read a truncated SVS's first page).
    """
    import openslide

    vendor = detect_vendor(path)
    if vendor == "dicom":
        check_dicom_folder(path)
    problem = tiff_structure_problem(path) if vendor is None else None
    if problem is not None:
        raise SlideOpenError(f"{path}: truncated or corrupt TIFF ({problem}); OpenSlide cannot open "
                             "it and it is not read as a plain image")
    try:
        handle = openslide.OpenSlide(str(path)) if vendor else openslide.ImageSlide(str(path))
    except Exception as exc:  # noqa: BLE001  OpenSlideError, UnidentifiedImageError, OSError..
        if vendor:
            raise SlideOpenError(f"{path}: OpenSlide identifies it as a '{vendor}' slide but cannot "
                                 f"open it (corrupt or truncated?): {one_line(exc)}") from None
        raise SlideOpenError(
            f"{path}: not a readable slide or image (unsupported, corrupt or truncated: "
            f"{one_line(exc)})") from None
    try:
        probe(handle)
    except Exception as exc:  # noqa: BLE001
        handle.close()
        raise SlideOpenError(f"{path}: corrupt or truncated slide ({one_line(exc)})") from None
    return handle
