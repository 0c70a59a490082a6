"""Tissue QC picture: thumbnail with the tissue contour and the kept tiles drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histo_net.io_utils import atomic_path
from histo_net.types import BoolMask, RGBImage
from histo_net.wsi.tiling import TilingResult
from histo_net.wsi.tissue import erode_mask

CONTOUR_RGB = (0, 90, 255)
TILE_RGB = (0, 170, 60)


def _mask_on_thumbnail(mask: BoolMask, mask_ds: float, shape_hw: tuple[int, int],
                       thumb_ds: float) -> BoolMask:
    """Nearest-neighbour resample of a mask (mask_ds level-0 px/px) onto the thumbnail grid."""
    height, width = shape_hw
    rows = np.minimum((np.arange(height) * thumb_ds / mask_ds).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) * thumb_ds / mask_ds).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def render_tissue_qc(result: TilingResult) -> RGBImage:
    """(h,w,3) uint8 QC image: tissue outlined in blue, kept tiles outlined (or filled) in green."""
    from PIL import Image, ImageDraw

    thumb = np.asarray(result.thumbnail, np.uint8)
    ds = result.thumbnail_downsample
    mask = _mask_on_thumbnail(result.tissue, result.tissue_downsample, thumb.shape[:2], ds)
    contour = mask & ~erode_mask(mask, iterations=2)
    out = thumb.copy()
    out[~mask] = (out[~mask] * 0.6 + 255 * 0.4).astype(np.uint8)  # lighten background
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image, "RGBA")
    side = result.plan.patch_size_level0 / ds
    for x, y in np.asarray(result.coords, np.float64) / ds:
        box = (x, y, x + side - 1, y + side - 1)
        if side >= 4:
            draw.rectangle(box, outline=TILE_RGB + (255,), width=1)
        else:
            draw.rectangle(box, fill=TILE_RGB + (110,))
    out = np.asarray(image).copy()
    out[contour] = CONTOUR_RGB
    return out


def write_tissue_qc_png(path: Path, result: TilingResult) -> None:
    """Render :func:`render_tissue_qc` and write it atomically as PNG to ``path``."""
    from PIL import Image

    with atomic_path(Path(path)) as tmp:
        Image.fromarray(render_tissue_qc(result)).save(tmp, format="PNG", compress_level=3)
