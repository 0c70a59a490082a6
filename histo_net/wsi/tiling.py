"""Tissue mask -> tile grid at a target mpp; write/read the coordinates h5.

The grid is computed vectorised from the low-resolution tissue mask: an integral
image of the mask, bilinearly interpolated at the (fractional) tile corners, gives
each tile's exact area-weighted tissue fraction without touching level 0.
Tiles may extend past the right/bottom slide edge (read as white; the part
outside counts as non-tissue).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from histo_net import __version__
from histo_net.config import TilingConfig
from histo_net.errors import MissingMPPError, NoTissueError
from histo_net.types import BoolMask, Coords, RGBImage
from histo_net.wsi.slide import ReadPlan, Slide
from histo_net.wsi.tissue import tissue_mask

log = logging.getLogger(__name__)

#: longest side of the image tissue is detected on (bounds memory on huge slides)
MAX_MASK_PX = 4096
#: the QC thumbnail is read at least this large (longest side) when the slide allows
QC_MIN_PX = 1024
TILES_FORMAT_VERSION = 1


@dataclass
class TilingResult:
    """Kept tiles of one slide plus the images they were derived from."""

    coords: Coords                # (N,2) int64 level-0 top-left (x, y)
    plan: ReadPlan
    tissue_fraction: np.ndarray   # (N,) float32 tissue fraction of each kept tile
    thumbnail: RGBImage           # (h,w,3) uint8 QC thumbnail
    thumbnail_downsample: float   # level-0 px per thumbnail px
    tissue: BoolMask              # (H,W) bool tissue mask
    tissue_downsample: float      # level-0 px per mask px
    tissue_area_mm2: float
    attrs: dict[str, Any]         # the h5 attributes (DESIGN.md section 3 + extras)


def _integral(mask: BoolMask) -> np.ndarray:
    """(H+1, W+1) integral image: ``I[i, j] = mask[:i, :j].sum()`` (int32 below 2**31 px, else int64)."""
    dtype = np.int32 if mask.size < 2**31 else np.int64
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype)
    np.cumsum(np.cumsum(mask, axis=0, dtype=dtype), axis=1, out=out[1:, 1:])
    return out


def _interp_weights(pos: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell index and fraction for bilinear lookup of integral-image positions in [0, size]."""
    pos = np.clip(pos, 0.0, float(size))
    idx = np.minimum(np.floor(pos).astype(np.int64), max(size - 1, 0))
    return idx, pos - idx


def _area_below(integral: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Exact mask area in ``[0,v) x [0,u)`` (mask px) for all pairs: (len(v), len(u))."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    iv, fv = _interp_weights(v, height)
    iu, fu = _interp_weights(u, width)
    fv, fu = fv[:, None], fu[None, :]
    i00 = integral[iv[:, None], iu[None, :]]
    i01 = integral[iv[:, None], iu[None, :] + 1]
    i10 = integral[iv[:, None] + 1, iu[None, :]]
    i11 = integral[iv[:, None] + 1, iu[None, :] + 1]
    return (1 - fv) * ((1 - fu) * i00 + fu * i01) + fv * ((1 - fu) * i10 + fu * i11)


def grid_tissue_fraction(
    mask: BoolMask, mask_downsample: float, xs_level0: np.ndarray, ys_level0: np.ndarray,
    patch_size_level0: int,
) -> np.ndarray:
    """(len(ys), len(xs)) float32 tissue fraction of square tiles at every (x, y) grid corner.

    ``mask_downsample`` is level-0 px per mask px; area outside the mask counts as non-tissue.
    """
    integral = _integral(mask)
    u0 = xs_level0 / mask_downsample
    u1 = (xs_level0 + patch_size_level0) / mask_downsample
    v0 = ys_level0 / mask_downsample
    v1 = (ys_level0 + patch_size_level0) / mask_downsample
    area = (_area_below(integral, v1, u1) - _area_below(integral, v0, u1)
            - _area_below(integral, v1, u0) + _area_below(integral, v0, u0))
    tile_area = (patch_size_level0 / mask_downsample) ** 2
    return np.clip(area / tile_area, 0.0, 1.0).astype(np.float32)


def _images_for_slide(slide: Slide, cfg: TilingConfig) -> tuple[RGBImage, float, RGBImage, float]:
    """One chunked thumbnail read -> (QC thumbnail, its ds, tissue image, its ds)."""
    from PIL import Image

    longest = max(slide.dimensions)
    tissue_ds = max(1.0, cfg.tissue.thumbnail_mpp / slide.mpp, longest / MAX_MASK_PX)
    qc_ds = max(1.0, longest / cfg.thumbnail_max_px)
    # read no finer than needed: the tissue resolution, unless that leaves the QC picture
    # under QC_MIN_PX (small slides); reading finer costs seconds on large slides
    read_ds = max(qc_ds, min(tissue_ds, longest / QC_MIN_PX))
    thumb, ds = slide.thumbnail(max(1, math.ceil(longest / read_ds)))
    factor = max(1, math.floor(tissue_ds / ds + 1e-6))
    image = Image.fromarray(thumb)
    tissue_rgb = np.asarray(image.reduce(factor)) if factor > 1 else thumb
    if max(thumb.shape[:2]) > cfg.thumbnail_max_px:
        scale = cfg.thumbnail_max_px / max(thumb.shape[:2])
        size = (max(1, round(thumb.shape[1] * scale)), max(1, round(thumb.shape[0] * scale)))
        qc = np.array(image.resize(size, Image.Resampling.BOX))
        qc_ds_out = ds * thumb.shape[1] / size[0]
    else:
        qc, qc_ds_out = thumb, ds
    return qc, qc_ds_out, tissue_rgb, ds * factor


def _base_attrs(slide: Slide, plan: ReadPlan, cfg: TilingConfig) -> dict[str, Any]:
    return {
        "target_mpp": float(plan.target_mpp),
        "tile_size_px": int(plan.tile_size_px),
        "patch_size_level0": int(plan.patch_size_level0),
        "read_level": int(plan.level),
        "read_size_px": int(plan.read_size_px),
        "slide_mpp": float(slide.mpp),
        "mpp_source": str(slide.mpp_source),
        "level0_width": int(slide.dimensions[0]),
        "level0_height": int(slide.dimensions[1]),
        "tissue_fraction_min": float(cfg.min_tissue_fraction),
        "histo_net_version": __version__,
        # extras beyond DESIGN.md section 3
        "read_level_downsample": float(plan.level_downsample),
        "stride_px": int(cfg.stride),
        "tiling_config": cfg.model_dump_json(),
        "format_version": TILES_FORMAT_VERSION,
    }


def tile_slide(slide: Slide, cfg: TilingConfig | None = None) -> TilingResult:
    """Detect tissue on a thumbnail and keep grid tiles with enough tissue.

    Raises ``MissingMPPError`` when the slide mpp is unknown and ``NoTissueError``
    when no tissue is found or no tile reaches ``cfg.min_tissue_fraction``.
    """
    cfg = cfg or TilingConfig()
    if not math.isfinite(slide.mpp):
        raise MissingMPPError(f"{slide.path}: microns per pixel unknown; pass --mpp X")
    plan = slide.read_plan(cfg.target_mpp, cfg.tile_size_px, cfg.level_tolerance, cfg.max_upsample)
    qc, qc_ds, tissue_rgb, mask_ds = _images_for_slide(slide, cfg)
    mask = tissue_mask(tissue_rgb, slide.mpp * mask_ds, cfg.tissue)
    area_mm2 = float(mask.sum()) * (mask_ds * slide.mpp) ** 2 / 1e6
    if not mask.any():
        raise NoTissueError(f"{slide.path}: no tissue detected (blank or unstained slide?)")
    width, height = slide.dimensions
    stride_l0 = cfg.stride * cfg.target_mpp / slide.mpp
    xs = np.round(np.arange(math.ceil(width / stride_l0)) * stride_l0).astype(np.int64)
    ys = np.round(np.arange(math.ceil(height / stride_l0)) * stride_l0).astype(np.int64)
    xs, ys = xs[xs < width], ys[ys < height]
    frac = grid_tissue_fraction(mask, mask_ds, xs, ys, plan.patch_size_level0)
    keep = (frac >= cfg.min_tissue_fraction) & (frac > 0)
    iy, ix = np.nonzero(keep)  # row-major: y then x
    if iy.size == 0:
        raise NoTissueError(
            f"{slide.path}: tissue found ({area_mm2:.3f} mm2) but no tile reaches "
            f"min_tissue_fraction={cfg.min_tissue_fraction}"
        )
    coords = np.stack([xs[ix], ys[iy]], axis=1).astype(np.int64)
    return TilingResult(
        coords=coords, plan=plan, tissue_fraction=frac[iy, ix].astype(np.float32),
        thumbnail=qc, thumbnail_downsample=float(qc_ds), tissue=mask,
        tissue_downsample=float(mask_ds), tissue_area_mm2=area_mm2,
        attrs=_base_attrs(slide, plan, cfg),
    )
