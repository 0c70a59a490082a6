"""Whole-slide reading: the only module that imports openslide.

Opens anything OpenSlide opens (DICOM WSI folders included) plus plain images (PNG,
JPEG, single-image TIFF, as an ``ImageSlide``); a file OpenSlide identifies as a WSI
format, or a truncated pyramidal TIFF, is never read as a plain image. What is not a
regular file is refused before any read and the open runs under a hard time limit
(:mod:`histo_net.wsi.file_checks`). Resolves microns per pixel (override > vendor
metadata > TIFF resolution tags, else ``MissingMPPError`` naming unusable metadata),
picks the pyramid level for a target mpp (refusing upsampling beyond a factor), reads
tiles as RGB uint8 (RGBA composited on white, beyond-edge white) and builds thumbnails
in chunks within a pixel budget (a level too large to read is never read whole).
Coordinates are level-0 pixels, top-left, (x, y).

This is the one place that decides how pixels are read: JPEG-tiled Aperio and
generic TIFF pyramids are served by the decode-once reader of
:mod:`histo_net.wsi.jpeg_tiles` (pixel-equal to OpenSlide, ``reader_name``
"tifffile-jpeg"), everything else by OpenSlide ("openslide"). Set
``HISTO_NET_READER=openslide`` to read everything through OpenSlide.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from histo_net.errors import (
    MissingMPPError,
    ResolutionMismatchError,
    SlideReadError,
    SlideTooLargeError,
)
from histo_net.types import MPP_MAX, MPP_MIN, RGBImage
from histo_net.wsi.file_checks import call_with_limit, check_slide_path
from histo_net.wsi.handles import (
    OPENSLIDE_READER,
    native_reader,
    one_line,
    open_handle,
    tile_reader,
)
from histo_net.wsi.jpeg_tiles import JpegTileError
from histo_net.wsi.metadata import associated_overview, mpp_from_unit, positive_float
from histo_net.wsi.pixels import (
    pil_to_rgb,
    resize_rgb,
    resize_tile,
)

log = logging.getLogger(__name__)

#: longest side (level px) of one chunk read while building a thumbnail
THUMBNAIL_CHUNK_PX = 2048
#: a level up to this factor coarser than a thumbnail's downsample is read directly
THUMBNAIL_LEVEL_SLACK = 1.25
#: most level pixels a thumbnail may read (a 5 MB TIFF may declare 200,000 x 200,000 px)
THUMBNAIL_MAX_READ_PX = 2_000_000_000
#: hard limit (s) on OpenSlide's open + probe; a blocked C call is abandoned after it
OPEN_TIMEOUT_S = 30.0
#: raw metadata properties that carry the slide's mpp (named in errors when unusable)
_MPP_PROPERTIES = ("openslide.mpp-x", "openslide.mpp-y", "aperio.MPP")
_TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".btf", ".tf8")


@dataclass(frozen=True)
class ReadPlan:
    """How to read one tile of ``tile_size_px`` at ``target_mpp`` from a slide.

    ``patch_size_level0`` is the tile footprint in level-0 px; the reader reads a
    ``read_size_px`` square at ``level`` and resizes it to ``tile_size_px``.
    """

    target_mpp: float
    tile_size_px: int
    level: int
    level_downsample: float
    read_size_px: int
    patch_size_level0: int


class Slide:
    """An open slide (context manager). Attributes are level-0 unless named otherwise."""

    def __init__(self, path: Path, handle: Any, mpp_override: float | None, require_mpp: bool) -> None:
        self.path = path
        self._handle = handle
        self._native = native_reader(handle)
        self.properties: dict[str, str] = dict(handle.properties)
        self.vendor: str | None = self.properties.get("openslide.vendor")
        self.dimensions: tuple[int, int] = tuple(handle.dimensions)  # type: ignore[assignment]
        self.level_count: int = int(handle.level_count)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(w), int(h)) for w, h in handle.level_dimensions
        )
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in handle.level_downsamples)
        self.is_image = self.vendor is None
        self.mpp, self.mpp_source = self._resolve_mpp(mpp_override, require_mpp)
        self._tiles = tile_reader(path, self.vendor, self.level_dimensions, self.level_downsamples)
        #: which reader serves read_region / read_tile / thumbnail: "tifffile-jpeg" or "openslide"
        self.reader_name: str = self._tiles.name if self._tiles is not None else OPENSLIDE_READER

    # ------------------------------------------------------------------ mpp
    def _tiff_tag_mpp(self) -> float | None:
        """mpp from TIFF XResolution/YResolution + ResolutionUnit (properties or the file)."""
        props = self.properties
        if "tiff.XResolution" in props and "tiff.ResolutionUnit" in props:
            try:
                xs = [mpp_from_unit(float(props[k]), props["tiff.ResolutionUnit"])
                      for k in ("tiff.XResolution", "tiff.YResolution") if k in props]
            except ValueError:
                xs = []
            vals = [v for v in xs if v is not None]
            if vals:
                return float(np.mean(vals))
        if self.is_image and self.path.suffix.lower() in _TIFF_SUFFIXES:
            try:
                import tifffile

                with tifffile.TiffFile(self.path) as tif:
                    tags = tif.pages[0].tags
                    res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
                    if res is None or unit is None:
                        return None
                    num, den = res.value
                    return mpp_from_unit(num / den if den else 0.0, str(int(unit.value)))
            except Exception as exc:  # noqa: BLE001  unreadable tags: treat as absent
                log.debug("%s: cannot read TIFF resolution tags: %s", self.path, exc)
        return None

    def _resolve_mpp(self, override: float | None, require: bool) -> tuple[float, str]:
        value: float | None = None
        source = "none"
        if override is not None:
            value, source = float(override), "override"
        else:
            props = self.properties
            xy = [positive_float(props[k]) for k in ("openslide.mpp-x", "openslide.mpp-y")
                  if k in props]
            if xy and all(v is not None for v in xy):
                value = float(np.mean([v for v in xy if v is not None]))
                tag_mpp = self._tiff_tag_mpp() if self.vendor == "generic-tiff" else None
                same = tag_mpp is not None and math.isclose(tag_mpp, value, rel_tol=1e-3)
                source = "tiff-resolution" if same else "metadata"
            else:
                tag_mpp = self._tiff_tag_mpp()
                if tag_mpp is not None:
                    value, source = tag_mpp, "tiff-resolution"
        if value is None:
            unusable = [f"{k} = {self.properties[k]!r}" for k in _MPP_PROPERTIES
                        if k in self.properties and positive_float(self.properties[k]) is None]
            if require and unusable:
                raise MissingMPPError(
                    f"{self.path}: the slide's mpp metadata is not a positive number "
                    f"({', '.join(unusable)}); pass the right value with --mpp X "
                    "(e.g. 0.25 for 40x, 0.5 for 20x) or an 'mpp' manifest column")
            if require:
                raise MissingMPPError(
                    f"{self.path}: microns per pixel unknown (no mpp metadata or TIFF resolution "
                    "tags); pass --mpp X (e.g. 0.25 for 40x, 0.5 for 20x) or an 'mpp' manifest column"
                )
            return float("nan"), "none"
        if not MPP_MIN <= value <= MPP_MAX:
            if require or source == "override":
                raise MissingMPPError(
                    f"{self.path}: implausible microns per pixel {value:.4g} (from {source}; "
                    f"expected {MPP_MIN}..{MPP_MAX}); pass the right value with --mpp X"
                )
            return float("nan"), "none"
        return value, source

    # ---------------------------------------------------------------- levels
    def read_plan(self, target_mpp: float, tile_size_px: int, tolerance: float = 0.1,
                  max_upsample: float | None = None) -> ReadPlan:
        """Coarsest level at least as fine as ``target_mpp`` (within ``tolerance``), read size there.

        ``ResolutionMismatchError`` when the slide is more than ``max_upsample`` times coarser
        than the target (tiles would be blown up from a few source pixels).
        """
        if not math.isfinite(self.mpp):
            raise MissingMPPError(f"{self.path}: microns per pixel unknown; pass --mpp X")
        patch_l0 = max(1, round(tile_size_px * target_mpp / self.mpp))
        level = 0
        for i, ds in enumerate(self.level_downsamples):
            if self.mpp * ds <= target_mpp * (1.0 + tolerance) and ds >= self.level_downsamples[level]:
                level = i
        ds = self.level_downsamples[level]
        read_px = max(1, round(patch_l0 / ds))
        if max_upsample is not None and self.mpp > target_mpp * max_upsample:
            raise ResolutionMismatchError(
                f"{self.path}: slide is {self.mpp:.4g} um/px (from {self.mpp_source}), "
                f"{self.mpp / target_mpp:.1f}x coarser than the target {target_mpp:g} um/px, so each "
                f"{tile_size_px} px tile would be upsampled from {read_px} source px (limit "
                f"{max_upsample:g}x, tiling setting max_upsample); if the slide's mpp is wrong "
                "pass the right one with --mpp X")
        if self.mpp > target_mpp * (1.0 + tolerance):
            log.warning("%s: slide mpp %.3f is coarser than target %.3f; tiles are upsampled",
                        self.path, self.mpp, target_mpp)
        return ReadPlan(float(target_mpp), int(tile_size_px), level, ds, read_px, patch_l0)

    def best_level_for_downsample(self, downsample: float) -> int:
        """Coarsest level whose downsample is <= ``downsample`` (level 0 if none)."""
        level = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6) and ds >= self.level_downsamples[level]:
                level = i
        return level

    # ----------------------------------------------------------------- reads
    def _reopen(self) -> None:
        import openslide

        try:
            self._handle.close()
        except Exception as exc:  # noqa: BLE001  a broken handle may fail to close; dropped anyway
            log.debug("%s: closing the broken handle failed: %s", self.path, exc)
        self._handle = openslide.open_slide(str(self.path))
        self._native = native_reader(self._handle)
        if self._tiles is not None:
            self._tiles.reset()

    def _read_rgb(self, xy_level0: tuple[int, int], level: int, size_wh: tuple[int, int]) -> RGBImage:
        """(h,w,3) RGB region; reopen the handle once and retry on failure, then SlideReadError."""
        loc = (int(xy_level0[0]), int(xy_level0[1]))
        size = (int(size_wh[0]), int(size_wh[1]))
        try:
            return self._read_once(loc, level, size)
        except Exception as first:  # noqa: BLE001  any backend error: reopen and retry once
            log.warning("%s: read at %s level %d failed (%s); reopening", self.path, loc, level,
                        one_line(first))
            try:
                self._reopen()
                return self._read_once(loc, level, size)
            except Exception as exc:  # noqa: BLE001
                raise SlideReadError(
                    f"{self.path}: cannot read region at {loc} level {level} size {size}: "
                    f"{one_line(exc)}"
                ) from None

    def _read_once(self, loc: tuple[int, int], level: int, size: tuple[int, int]) -> RGBImage:
        if self._tiles is not None and self._tiles.serves(loc, level):
            try:
                return self._tiles.read_region(loc, level, size)
            except JpegTileError as exc:  # OpenSlide reads it (or raises its own error)
                log.debug("%s: JPEG tile reader at %s level %d: %s; reading through OpenSlide",
                          self.path, loc, level, exc)
        if self._native is not None:
            return self._native(loc, level, size)
        return pil_to_rgb(self._handle.read_region(loc, level, size))

    def read_region(self, xy_level0: tuple[int, int], level: int, size_wh: tuple[int, int]) -> RGBImage:
        """(h,w,3) uint8 RGB of ``size_wh`` level px at ``level``, top-left at level-0 ``xy_level0``."""
        return self._read_rgb(xy_level0, level, size_wh)

    def read_tile(self, xy_level0: tuple[int, int], plan: ReadPlan) -> RGBImage:
        """(tile,tile,3) uint8 RGB tile at ``plan.target_mpp``; beyond the slide edge is white."""
        rgb = self._read_rgb(xy_level0, plan.level, (plan.read_size_px, plan.read_size_px))
        return resize_tile(rgb, plan.tile_size_px)

    def thumbnail(self, max_px: int, max_read_px: float = THUMBNAIL_MAX_READ_PX
                  ) -> tuple[RGBImage, float]:
        """RGB thumbnail whose longest side is <= ``max_px`` and its downsample.

        Returns ``(rgb (h,w,3) uint8, downsample)`` where downsample is level-0 px
        per thumbnail px, the same on both axes (the last row/column may extend
        past the slide edge and is white). Read in chunks from the coarsest level
        that is fine enough (a level up to 25% coarser is used as is, giving a slightly
        smaller thumbnail), so a large level is never held whole. When that level has more
        than ``max_read_px`` pixels the slide's own overview (an associated ``thumbnail``
        covering the whole slide) is used, else ``SlideTooLargeError``: never read whole.
        """
        width, height = self.dimensions
        ds = max(1.0, max(width, height) / float(max_px))
        level = self.best_level_for_downsample(ds * THUMBNAIL_LEVEL_SLACK)
        lds = self.level_downsamples[level]
        level_w, level_h = self.level_dimensions[level]
        if float(level_w) * float(level_h) > max_read_px:
            return self._overview_thumbnail(max_px, level, max_read_px)
        ds = max(ds, lds)
        thumb_w, thumb_h = max(1, math.ceil(width / ds)), max(1, math.ceil(height / ds))
        ratio = ds / lds  # level px per thumbnail px (>= 1)
        out = np.empty((thumb_h, thumb_w, 3), np.uint8)
        block = max(1, int(THUMBNAIL_CHUNK_PX / ratio))  # thumbnail px per chunk side
        for ty in range(0, thumb_h, block):
            for tx in range(0, thumb_w, block):
                bw, bh = min(block, thumb_w - tx), min(block, thumb_h - ty)
                read_w = max(1, round(bw * ratio))
                read_h = max(1, round(bh * ratio))
                xy = (round(tx * ds), round(ty * ds))
                chunk = self.read_region(xy, level, (read_w, read_h))
                out[ty:ty + bh, tx:tx + bw] = resize_rgb(chunk, (bw, bh))
        return out, ds

    def _overview_thumbnail(self, max_px: int, level: int, max_read_px: float
                            ) -> tuple[RGBImage, float]:
        """The associated whole-slide ``thumbnail`` image fitted to ``max_px``, or SlideTooLargeError."""
        width, height = self.dimensions
        overview = associated_overview(self._handle, (width, height))
        if overview is None:
            level_w, level_h = self.level_dimensions[level]
            raise SlideTooLargeError(
                f"{self.path}: a thumbnail would need reading {level_w * level_h / 1e9:.3g} Gpx "
                f"from level {level} ({level_w} x {level_h} px), over the budget of "
                f"{max_read_px / 1e9:.3g} Gpx, and the file has no coarser level or overview "
                f"image (it declares {width} x {height} px in a {self.path.stat().st_size / 1e6:.3g} "
                "MB file); convert it to a pyramidal format")
        ds = max(1.0, width / overview.shape[1], max(width, height) / float(max_px))
        size = (max(1, math.ceil(width / ds)), max(1, math.ceil(height / ds)))
        log.warning("%s: level %d too large to read for a thumbnail; using the slide's overview image",
                    self.path, level)
        return resize_rgb(overview, size), ds

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release the OpenSlide handle and the tile reader's file."""
        self._native = None
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Slide:  # noqa: PYI034
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Slide({str(self.path)!r}, {self.dimensions[0]}x{self.dimensions[1]}, "
                f"levels={self.level_count}, mpp={self.mpp:.4g} ({self.mpp_source}))")


def open_slide(path: str | Path, mpp_override: float | None = None, require_mpp: bool = True,
               *, open_timeout_s: float = OPEN_TIMEOUT_S) -> Slide:
    """Open a whole-slide image, a folder of DICOM instances, or a plain image.

    Before any read, what is not a regular file is refused (``NotAFileError``: FIFO,
    device, socket, symlink loop, folder); the open + probe runs under a hard limit of
    ``open_timeout_s`` (``SlideTimeoutError``). Raises ``SlideOpenError`` (missing, empty,
    unsupported, truncated) and ``MissingMPPError`` (no mpp and none given, unusable
    metadata, or outside 0.05..20 um/px) when ``require_mpp``; otherwise an unknown mpp
    is NaN with source "none".
    """
    target = check_slide_path(Path(path))
    with warnings.catch_warnings():  # PIL warns (multi-line) on corrupt EXIF etc.: we raise
        warnings.simplefilter("ignore")
        handle = call_with_limit(
            lambda: open_handle(target), open_timeout_s,
            f"{target}: opening did not finish within {open_timeout_s:g} s (a blocked read: "
            "network mount, device or a named pipe in a DICOM folder); the call was abandoned",
            cleanup=lambda h: h.close())
    try:
        return Slide(target, handle, mpp_override, require_mpp)
    except BaseException:
        handle.close()
        raise
