"""Helpers that write small test slides and bad inputs (importable by any test).

* :func:`he_like_image` - an (H,W,3) uint8 H&E-looking image: pink/purple
  textured tissue inside ellipses on near-white glass, plus its truth mask.
* :func:`write_pyramidal_tiff` - tiled pyramidal TIFF that OpenSlide opens as
  ``generic-tiff`` (mpp from resolution tags) or, with ``aperio=True``, as an
  Aperio SVS (mpp from the ``MPP =`` description field); ``mpp=None`` writes
  no resolution at all.
* :func:`write_png` - plain PNG (optionally RGBA).
* bad inputs: :func:`write_empty_file`, :func:`write_random_bytes`,
  :func:`write_truncated_copy`, :func:`make_folder_named`.

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
