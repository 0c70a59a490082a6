"""JPEG bitstreams of TIFF tiles: splice JPEGTables and the colour space in, decode strictly.

OpenSlide decodes a TIFF JPEG tile by loading the page's JPEGTables first and then
forcing libjpeg's ``jpeg_color_space`` from the photometric tag (YCbCr or RGB;
Aperio "JPEG/RGB" tiles carry no marker saying so), and it turns every libjpeg
warning into an error. Here the same stream is built as one complete JPEG
(SOI + table segments + an Adobe APP14 marker whose transform flag fixes the
colour space, replacing any JFIF/Adobe marker of the tile + the tile's own
segments) and decoded by libjpeg-turbo through ``simplejpeg`` with ``strict=True``
(warnings raise). The decoder settings are libjpeg's defaults, as in OpenSlide:
accurate integer IDCT, fancy upsampling.
"""

from __future__ import annotations

import struct

from histo_net.types import RGBImage

_SOI, _EOI, _SOS, _APP0, _APP14 = 0xD8, 0xD9, 0xDA, 0xE0, 0xEE
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class JpegTileError(Exception):
    """A tile could not be read or decoded here; the caller falls back to OpenSlide."""


def _adobe_marker(ycbcr: bool) -> bytes:
    """APP14 'Adobe' segment whose transform flag (0 RGB, 1 YCbCr) fixes libjpeg's colour space."""
    return b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes([1 if ycbcr else 0])


def _segments(data: bytes, start: int) -> list[tuple[int, int, int]]:
    """(marker, offset, length incl. marker) of the header segments from ``start`` up to SOS/EOI."""
    out: list[tuple[int, int, int]] = []
    pos, end = start, len(data)
    while pos + 2 <= end:
        if data[pos] != 0xFF:
            raise JpegTileError(f"bad JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _EOI:
            out.append((marker, pos, 2))
            return out
        if pos + 4 > end:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        out.append((marker, pos, length + 2))
        if marker == _SOS:
            return out
        pos += length + 2
    raise JpegTileError("JPEG header runs past the end of the data")


def tables_prefix(tables: bytes | None, ycbcr: bool) -> bytes:
    """SOI + the table segments of a TIFF JPEGTables blob (or none) + the colour-space marker.

    ``ycbcr``: the page's photometric is YCbCr (else RGB). ``JpegTileError`` when
    the tables are not SOI ... EOI.
    """
    inner = b""
    if tables:
        if tables[:2] != b"\xff\xd8":
            raise JpegTileError("JPEGTables does not start with SOI")
        segs = _segments(tables, 2)
        if not segs or segs[-1][0] != _EOI:
            raise JpegTileError("JPEGTables does not end with EOI")
        inner = b"".join(tables[o:o + n] for m, o, n in segs[:-1] if m not in (_APP0, _APP14))
    return b"\xff\xd8" + inner + _adobe_marker(ycbcr)


def splice_tile(prefix: bytes, tile: bytes) -> bytes:
    """A complete JPEG stream: ``prefix`` + the tile's own segments (JFIF/Adobe dropped).

    Raises ``JpegTileError`` when the tile does not start with SOI or its frame
    does not have 3 components (OpenSlide decodes only those as colour).
    """
    if tile[:2] != b"\xff\xd8":
        raise JpegTileError("tile does not start with a JPEG SOI marker")
    segs = _segments(tile, 2)
    if segs[-1][0] != _SOS:
        raise JpegTileError("tile has no JPEG scan")
    parts = [prefix]
    for marker, off, length in segs[:-1]:
        if marker in (_APP0, _APP14):
            continue
        if marker in _SOF_MARKERS and (length < 12 or tile[off + 9] != 3):
            raise JpegTileError("JPEG frame does not have 3 components")
        parts.append(tile[off:off + length])
    parts.append(tile[segs[-1][1]:])
    return b"".join(parts)


def decode_tile(stream: bytes, tile_w: int, tile_h: int) -> RGBImage:
    """(tile_h, tile_w, 3) uint8 RGB of a complete JPEG stream; ``JpegTileError`` on any warning."""
    import simplejpeg

    try:
        rgb = simplejpeg.decode_jpeg(stream, colorspace="RGB", fastdct=False, fastupsample=False,
                                     strict=True)
    except (ValueError, RuntimeError) as exc:
        raise JpegTileError(str(exc).strip().splitlines()[0] if str(exc).strip() else "bad JPEG") from None
    if rgb.shape != (tile_h, tile_w, 3):
        raise JpegTileError(f"JPEG tile is {rgb.shape[1]}x{rgb.shape[0]}, expected {tile_w}x{tile_h}")
    return rgb
