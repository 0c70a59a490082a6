"""Helpers that write small test slides and bad inputs (importable by any test).

* :func:`he_like_image` - an (H,W,3) uint8 H&E-looking image: pink/purple
  textured tissue inside ellipses on near-white glass, plus its truth mask.
* :func:`write_pyramidal_tiff` - tiled pyramidal TIFF that OpenSlide opens as
  ``generic-tiff`` (mpp from resolution tags) or, with ``aperio=True``, as an
  Aperio SVS (mpp from the ``MPP =`` description field); ``mpp=None`` writes
  no resolution at all.
* :func:`write_png` - plain PNG (optionally RGBA).
* bad inputs: :func:`write_empty_file`, :func:`write_random_bytes`,
  :func:`write_truncated_copy`, :func:`make_folder_named`, :func:`write_huge_declared_tiff`
  (a few MB declaring 200,000 x 200,000 px), :func:`flip_bytes_in_tiles`,
  :func:`write_garbage_ifd_copy`.
* :func:`write_dicom_wsi` - a minimal DICOM VL Whole Slide Microscopy instance (explicit VR
  little endian, uncompressed RGB frames, TILED_FULL) that OpenSlide 4 opens.

Everything is deterministic (seeded) and small; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: (cx, cy, rx, ry) as fractions of width/height
DEFAULT_ELLIPSES: tuple[tuple[float, float, float, float], ...] = (
    (0.35, 0.5, 0.2, 0.3),
    (0.75, 0.4, 0.12, 0.2),
)
GLASS_RGB = (242, 240, 243)


def ellipse_mask(height: int, width: int,
                 ellipses: Sequence[tuple[float, float, float, float]] = DEFAULT_ELLIPSES
                 ) -> np.ndarray:
    """(H,W) bool union of ellipses given as fractions (cx, cy, rx, ry) of the image size."""
    yy = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    xx = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    mask = np.zeros((height, width), bool)
    for cx, cy, rx, ry in ellipses:
        mask |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    return mask


def _smooth_noise(height: int, width: int, cell_px: int, rng: np.random.Generator) -> np.ndarray:
    """(H,W) float32 in [0,1]: random values on a coarse grid, bilinearly upsampled."""
    from PIL import Image

    small = rng.random((max(2, height // cell_px + 2), max(2, width // cell_px + 2)), np.float32)
    big = Image.fromarray(small, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(big, np.float32)


def he_like_image(
    height: int, width: int, seed: int = 0,
    ellipses: Sequence[tuple[float, float, float, float]] = DEFAULT_ELLIPSES,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (H,W,3) uint8, tissue (H,W) bool)``: H&E-like tissue in ellipses on glass."""
    rng = np.random.default_rng(seed)
    tissue = ellipse_mask(height, width, ellipses)
    eosin = np.array([232, 150, 190], np.float32)
    hema = np.array([95, 60, 150], np.float32)
    mix = 0.6 * _smooth_noise(height, width, 48, rng) + 0.4 * _smooth_noise(height, width, 6, rng)
    mix = np.clip((mix - 0.35) * 1.6, 0, 1)[..., None]
    stained = eosin * (1 - mix) + hema * mix
    glass = np.array(GLASS_RGB, np.float32)
    rgb = np.where(tissue[..., None], stained, glass)
    rgb += rng.normal(0, 3.0, (height, width, 1)).astype(np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8), tissue


def blank_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H,W,3) uint8 empty glass with faint noise (no tissue)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 2.0, (height, width, 3)).astype(np.float32)
    return np.clip(np.array(GLASS_RGB, np.float32) + noise, 0, 255).astype(np.uint8)


def write_pyramidal_tiff(
    path: Path, rgb: np.ndarray, mpp: float | None = 0.5, n_levels: int = 3,
    tile_px: int = 256, compression: str | None = "jpeg", aperio: bool = False,
    resolution_unit: str = "CENTIMETER",
) -> Path:
    """Write ``rgb`` as a tiled pyramid (each level half the previous) and return ``path``.

    ``aperio=True`` writes an Aperio-style description (``MPP = ...``) instead of
    resolution tags; ``mpp=None`` writes neither.
    """
    import tifffile

    path = Path(path)
    per_unit = {"CENTIMETER": 1e4, "INCH": 25400.0}[resolution_unit]
    height, width = rgb.shape[:2]
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        level = rgb
        for i in range(n_levels):
            kwargs: dict = {"tile": (tile_px, tile_px), "compression": compression,
                            "photometric": "rgb", "subfiletype": 0 if i == 0 else 1}
            if aperio:
                desc = (f"Aperio Image Library v12.0.15 (histo-net test)\r\n{width}x{height} "
                        f"({tile_px}x{tile_px}) JPEG/RGB Q=80")
                if i == 0 and mpp is not None:
                    desc += f"|AppMag = 20|MPP = {mpp:.4f}"
                kwargs["description"] = desc
                kwargs["metadata"] = None
            elif mpp is not None:
                res = per_unit / (mpp * 2**i)
                kwargs["resolution"] = (res, res)
                kwargs["resolutionunit"] = resolution_unit
            if not aperio:
                kwargs["metadata"] = None
            tif.write(np.ascontiguousarray(level), **kwargs)
            level = level[::2, ::2]  # cheap decimation is enough for tests
    return path


def write_png(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    """Write (H,W,3) uint8 ``rgb`` (plus optional (H,W) uint8 alpha) as PNG."""
    from PIL import Image

    path = Path(path)
    if alpha is not None:
        Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), mode="RGBA").save(path)
    else:
        Image.fromarray(rgb).save(path)
    return path


def write_empty_file(path: Path) -> Path:
    """A zero-byte file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_random_bytes(path: Path, n_bytes: int = 4096, seed: int = 0) -> Path:
    """``n_bytes`` of seeded random bytes (e.g. named ``.svs``)."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, np.uint8).tobytes())
    return path


def write_truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a cut download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def make_folder_named(path: Path) -> Path:
    """A directory with a slide-like name (e.g. ``x.svs``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_test_slide(path: Path, height: int = 2048, width: int = 3072, mpp: float | None = 0.5,
                     seed: int = 0, **kwargs: object) -> tuple[Path, np.ndarray]:
    """H&E-like pyramidal TIFF at ``path``; returns ``(path, level-0 truth mask (H,W) bool)``."""
    rgb, tissue = he_like_image(height, width, seed)
    write_pyramidal_tiff(path, rgb, mpp=mpp, **kwargs)  # type: ignore[arg-type]
    return Path(path), tissue


def area_weights(n_src: int, n_dst: int) -> np.ndarray:
    """(n_dst, n_src) float64 exact pixel-area weights of a 1-D box downscale, rows sum to 1."""
    scale = n_src / n_dst
    lo = np.arange(n_dst)[:, None] * scale
    src = np.arange(n_src)[None, :]
    overlap = np.clip(np.minimum(src + 1, lo + scale) - np.maximum(src, lo), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_resize_reference(rgb: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """(h,w,3) float64 exact area-average downscale of (H,W,3) ``rgb`` (slow, for tests)."""
    wy = area_weights(rgb.shape[0], size_wh[1])
    wx = area_weights(rgb.shape[1], size_wh[0])
    rows = np.tensordot(wy, rgb.astype(np.float64), axes=(1, 0))    # (h, W, 3)
    return np.tensordot(rows, wx, axes=(1, 1)).transpose(0, 2, 1)   # (h, 3, w) -> (h, w, 3)


# --------------------------------------------------------------------------- hostile files

def write_huge_declared_tiff(path: Path, width: int = 200_000, height: int = 200_000,
                             tile_px: int = 256, mpp: float = 0.5) -> Path:
    """A tiled, uncompressed TIFF declaring ``width x height`` px whose tiles all point at
    one shared tile: about 8 bytes per tile (4.9 MB for 200,000 x 200,000), mpp in tags."""
    import struct

    nx, ny = -(-width // tile_px), -(-height // tile_px)
    n = nx * ny
    rgb, _ = he_like_image(tile_px, tile_px, seed=5, ellipses=((0.5, 0.5, 0.6, 0.6),))
    tile = rgb.tobytes()
    res = round(1e4 / mpp)
    entries = 14
    tile_at = 8
    bits_at = tile_at + len(tile)
    xres_at, yres_at = bits_at + 6, bits_at + 14
    offsets_at = bits_at + 22
    counts_at = offsets_at + 4 * n
    ifd_at = counts_at + 4 * n
    tags = [  # (tag, type, count, value-or-offset); types: 3 SHORT, 4 LONG, 5 RATIONAL
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bits_at), (259, 3, 1, 1),
        (262, 3, 1, 2), (277, 3, 1, 3), (282, 5, 1, xres_at), (283, 5, 1, yres_at),
        (284, 3, 1, 1), (296, 3, 1, 3), (322, 4, 1, tile_px), (323, 4, 1, tile_px),
        (324, 4, n, offsets_at), (325, 4, n, counts_at)]
    assert len(tags) == entries
    with open(path, "wb") as fh:
        fh.write(b"II*\x00" + struct.pack("<I", ifd_at))
        fh.write(tile)
        fh.write(struct.pack("<3H", 8, 8, 8))
        fh.write(struct.pack("<2I", res, 1) * 2)
        fh.write(np.full(n, tile_at, "<u4").tobytes())
        fh.write(np.full(n, len(tile), "<u4").tobytes())
        fh.write(struct.pack("<H", entries))
        for tag, kind, count, value in tags:
            packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 and count == 1 else \
                struct.pack("<I", value)
            fh.write(struct.pack("<HHI", tag, kind, count) + packed)
        fh.write(struct.pack("<I", 0))
    return Path(path)


def flip_bytes_in_tiles(src: Path, dst: Path, per_tile: int = 8, seed: int = 0,
                        page: int = 0, fraction: float = 1.0) -> Path:
    """Copy of the TIFF ``src`` with ``per_tile`` bytes inverted inside the first ``fraction``
    of the tiles of ``page`` (row-major)."""
    import tifffile

    data = bytearray(Path(src).read_bytes())
    with tifffile.TiffFile(src) as tif:
        tiff_page = tif.pages[page]
        spans = list(zip(tiff_page.dataoffsets, tiff_page.databytecounts))
    spans = spans[:max(1, round(len(spans) * fraction))]
    rng = np.random.default_rng(seed)
    for offset, count in spans:
        for _ in range(per_tile):
            data[offset + int(rng.integers(count // 4, count - 4))] ^= 0xFF
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def write_garbage_ifd_copy(src: Path, dst: Path) -> Path:
    """Copy of the TIFF ``src`` whose first-IFD offset points far past the end of the file."""
    data = bytearray(Path(src).read_bytes())
    data[4:8] = (0x7FFFFFF0).to_bytes(4, "little")
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


# --------------------------------------------------------------------------- DICOM

_LONG_VR = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"}
WSM_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def _dicom_element(group: int, elem: int, vr: bytes, value: bytes | str) -> bytes:
    """One explicit-VR little-endian data element (value padded to even length)."""
    import struct

    raw = value.encode() if isinstance(value, str) else value
    if len(raw) % 2:
        raw += b"\x00" if vr in (b"UI", b"OB") else b" "
    head = struct.pack("<HH", group, elem) + vr
    if vr in _LONG_VR:
        return head + b"\x00\x00" + struct.pack("<I", len(raw)) + raw
    return head + struct.pack("<H", len(raw)) + raw


def write_dicom_wsi(path: Path, rgb: np.ndarray, *, tile_px: int = 128, mpp: float = 0.5,
                    series_uid: str = "1.2.826.0.1.3680043.9.7.1",
                    instance_uid: str = "1.2.826.0.1.3680043.9.7.2") -> Path:
    """A one-level DICOM WSI instance of (H,W,3) uint8 ``rgb`` (uncompressed RGB frames)."""
    import struct

    height, width = rgb.shape[:2]
    frames = []
    for ty in range(0, height, tile_px):
        for tx in range(0, width, tile_px):
            frame = np.full((tile_px, tile_px, 3), 255, np.uint8)
            part = rgb[ty:ty + tile_px, tx:tx + tile_px]
            frame[:part.shape[0], :part.shape[1]] = part
            frames.append(frame.tobytes())
    el = _dicom_element
    meta_body = (el(2, 1, b"OB", b"\x00\x01") + el(2, 2, b"UI", WSM_SOP_CLASS)
                 + el(2, 3, b"UI", instance_uid) + el(2, 0x10, b"UI", "1.2.840.10008.1.2.1")
                 + el(2, 0x12, b"UI", "1.2.826.0.1.3680043.9.7"))
    meta = el(2, 0, b"UL", struct.pack("<I", len(meta_body))) + meta_body

    def item(body: bytes) -> bytes:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body

    spacing = f"{mpp / 1000:.6g}\\{mpp / 1000:.6g}"  # mm per pixel, row\\column
    shared = item(el(0x28, 0x9110, b"SQ", item(el(0x28, 0x30, b"DS", spacing))))
    us = lambda v: struct.pack("<H", v)
    ul = lambda v: struct.pack("<I", v)
    dataset = b"".join([
        el(8, 8, b"CS", "ORIGINAL\\PRIMARY\\VOLUME\\NONE"), el(8, 0x16, b"UI", WSM_SOP_CLASS),
        el(8, 0x18, b"UI", instance_uid), el(8, 0x60, b"CS", "SM"),
        el(0x20, 0xD, b"UI", "1.2.826.0.1.3680043.9.7.3"), el(0x20, 0xE, b"UI", series_uid),
        el(0x20, 0x9311, b"CS", "TILED_FULL"),
        el(0x28, 2, b"US", us(3)), el(0x28, 4, b"CS", "RGB"), el(0x28, 6, b"US", us(0)),
        el(0x28, 8, b"IS", str(len(frames))), el(0x28, 0x10, b"US", us(tile_px)),
        el(0x28, 0x11, b"US", us(tile_px)), el(0x28, 0x100, b"US", us(8)),
        el(0x28, 0x101, b"US", us(8)), el(0x28, 0x102, b"US", us(7)), el(0x28, 0x103, b"US", us(0)),
        el(0x48, 6, b"UL", ul(width)), el(0x48, 7, b"UL", ul(height)), el(0x48, 0x303, b"UL", ul(1)),
        el(0x5200, 0x9229, b"SQ", shared),
        el(0x7FE0, 0x10, b"OB", b"".join(frames)),
    ])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x00" * 128 + b"DICM" + meta + dataset)
    return Path(path)
