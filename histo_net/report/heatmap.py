"""Tile scores -> heatmap grids on the slide thumbnail, and PNG overlays with a colorbar.

Pure numpy; matplotlib (Agg, object API, no pyplot global state) is imported inside
the drawing functions so importing this module is cheap.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from histo_net.types import Coords

logger = logging.getLogger(__name__)

#: level-0 px a tile's footprint reaches past its nominal size on the grid (rounding slack)
ROUNDING_GAP_PX = 1
#: colours of a palette-encoded heatmap PNG (the overlays compress ~4x smaller than RGB)
PALETTE_COLOURS = 256
#: JPEG quality of heatmaps embedded in report.html (the PNG files stay beside it)
HTML_JPEG_QUALITY = 85


def _footprint_cells(start_level0: np.ndarray, patch_size_level0: int, downsample: float,
                     n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid index ranges ``[lo, hi)`` (int64) covered by tiles starting at ``start_level0``.

    A cell is covered when the tile spans its centre; a tile smaller than one cell still
    covers the cell holding its own centre, so no tile vanishes from the map.
    """
    start = start_level0.astype(np.float64) / downsample
    stop = (start_level0.astype(np.float64) + patch_size_level0) / downsample
    lo = np.ceil(start - 0.5).astype(np.int64)
    hi = np.ceil(stop - 0.5).astype(np.int64)
    centre = np.floor((start + stop) / 2.0).astype(np.int64)
    empty = hi <= lo
    lo = np.where(empty, centre, lo)
    hi = np.where(empty, centre + 1, hi)
    return np.clip(lo, 0, n_cells), np.clip(hi, 0, n_cells)


def _box_sum(shape: tuple[int, int], x_lo: np.ndarray, x_hi: np.ndarray, y_lo: np.ndarray,
             y_hi: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(h, w) float64 sum of ``values`` over the boxes, via a 2-D difference array."""
    h, w = shape
    diff = np.zeros((h + 1, w + 1), dtype=np.float64)
    np.add.at(diff, (y_lo, x_lo), values)
    np.add.at(diff, (y_lo, x_hi), -values)
    np.add.at(diff, (y_hi, x_lo), -values)
    np.add.at(diff, (y_hi, x_hi), values)
    return np.cumsum(np.cumsum(diff, axis=0), axis=1)[:h, :w]


def tissue_on_grid(tissue_mask: np.ndarray, tissue_downsample: float, grid_shape: tuple[int, int],
                   grid_downsample: float) -> np.ndarray:
    """Nearest-neighbour resample of a tissue mask onto the heatmap grid -> (h, w) bool.

    Each grid cell takes the mask value under its centre (level-0 position
    ``(i + 0.5) * grid_downsample``); cells beyond the mask are non-tissue.
    """
    mask = np.asarray(tissue_mask, dtype=bool)
    h, w = grid_shape
    rows = np.floor((np.arange(h) + 0.5) * grid_downsample / tissue_downsample).astype(np.int64)
    cols = np.floor((np.arange(w) + 0.5) * grid_downsample / tissue_downsample).astype(np.int64)
    out = np.zeros((h, w), dtype=bool)
    row_ok = rows < mask.shape[0]
    col_ok = cols < mask.shape[1]
    out[np.ix_(row_ok, col_ok)] = mask[np.ix_(rows[row_ok], cols[col_ok])]
    return out


def scores_to_grid(coords_level0: Coords, scores: np.ndarray, *, patch_size_level0: int,
                   grid_shape: tuple[int, int], grid_downsample: float,
                   tissue_mask: np.ndarray | None = None,
                   tissue_downsample: float | None = None) -> np.ndarray:
    """Paint per-tile scores onto a thumbnail-sized grid -> (h, w) float32.

    ``coords_level0`` (N, 2) int64 level-0 top-left (x, y); ``scores`` (N,) float;
    ``grid_downsample`` level-0 px per grid cell. Every tile's footprint gets its score;
    where tiles overlap the cell holds their mean (sum / count). Cells no tile covers,
    and cells the tissue mask (at ``tissue_downsample``) calls background, are NaN.
    Non-finite scores are ignored.
    """
    coords = np.asarray(coords_level0, dtype=np.int64).reshape(-1, 2)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(coords) != len(values):
        raise ValueError(f"scores_to_grid: {len(coords)} coords but {len(values)} scores")
    if grid_downsample <= 0 or patch_size_level0 <= 0:
        raise ValueError("scores_to_grid: grid_downsample and patch_size_level0 must be > 0")
    h, w = int(grid_shape[0]), int(grid_shape[1])
    keep = np.isfinite(values)
    coords, values = coords[keep], values[keep]
    # tile starts are rounded to whole level-0 px, so grid neighbours can be 1 px apart:
    # reaching 1 px further closes those gaps (white seams on fine grids)
    extent = patch_size_level0 + ROUNDING_GAP_PX
    x_lo, x_hi = _footprint_cells(coords[:, 0], extent, grid_downsample, w)
    y_lo, y_hi = _footprint_cells(coords[:, 1], extent, grid_downsample, h)
    total = _box_sum((h, w), x_lo, x_hi, y_lo, y_hi, values)
    count = _box_sum((h, w), x_lo, x_hi, y_lo, y_hi, np.ones_like(values))
    count = np.rint(count)  # integer counts; removes cumsum round-off
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    if tissue_mask is not None:
        if tissue_downsample is None or tissue_downsample <= 0:
            raise ValueError("scores_to_grid: tissue_mask needs a positive tissue_downsample")
        grid[~tissue_on_grid(tissue_mask, tissue_downsample, (h, w), grid_downsample)] = np.nan
    return grid.astype(np.float32)


def _figure_size_in(image_hw: tuple[int, int], width_in: float = 7.0) -> tuple[float, float]:
    """Figure (width, height) inches keeping the image aspect, plus room for title + colorbar."""
    h, w = image_hw
    aspect = h / max(w, 1)
    image_w_in = width_in * 0.82
    height_in = float(np.clip(image_w_in * aspect + 0.9, 2.5, 14.0))
    return width_in, height_in


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W[, 3|4]) image -> (H, W, 3) uint8 (alpha dropped, grey replicated)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return arr


def overlay_png(thumbnail: np.ndarray, grid: np.ndarray, *, title: str, colorbar_label: str,
                cmap: str = "inferno", vmin: float | None = None, vmax: float | None = None,
                alpha: float = 0.55, dpi: int = 110) -> bytes:
    """PNG bytes: ``thumbnail`` (H, W, 3) uint8 with ``grid`` (h, w) float overlaid.

    The grid is stretched over the whole thumbnail (they must cover the same level-0
    extent); NaN cells are transparent. A labelled colorbar sits on the right and
    ``title`` should say what the map shows and which class it explains.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rgb = _to_rgb_uint8(thumbnail)
    values = np.asarray(grid, dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    colormap = colormaps[cmap].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    h, w = rgb.shape[:2]
    fig = Figure(figsize=_figure_size_in((h, w)), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.03, 0.80, 0.87))
    ax.imshow(rgb, extent=(0, w, h, 0), interpolation="bilinear")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=lo, vmax=hi, alpha=alpha,
                      extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=11, loc="left")
    cax = fig.add_axes((0.85, 0.10, 0.03, 0.75))
    bar = fig.colorbar(image, cax=cax)
    bar.solids.set_alpha(1.0)
    bar.set_label(colorbar_label, fontsize=9)
    canvas.draw()
    rendered = np.asarray(canvas.buffer_rgba())[:, :, :3]
    return image_bytes(_crop_margins(rendered), fmt="PNG", palette=True)


def image_mime(data: bytes) -> str:
    """The MIME type of PNG / JPEG / WebP bytes (by magic number; PNG otherwise)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def compact_for_html(data: bytes, quality: int = HTML_JPEG_QUALITY) -> bytes:
    """PNG bytes of a rendered heatmap re-encoded as JPEG for embedding (about 4x smaller)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image.convert("RGB"))
    return image_bytes(rgb, fmt="JPEG", quality=quality)


def _crop_margins(rgb: np.ndarray, pad_px: int = 8) -> np.ndarray:
    """Crop uniform white margins around a rendered figure, keeping ``pad_px`` of border."""
    ink = (rgb < 250).any(axis=2)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return rgb
    top, bottom = max(rows[0] - pad_px, 0), min(rows[-1] + pad_px + 1, rgb.shape[0])
    left, right = max(cols[0] - pad_px, 0), min(cols[-1] + pad_px + 1, rgb.shape[1])
    return np.ascontiguousarray(rgb[top:bottom, left:right])


def image_bytes(rgb: np.ndarray, *, fmt: str = "PNG", max_side_px: int | None = None,
                quality: int = 88, palette: bool = False) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG or JPEG bytes, optionally shrunk to ``max_side_px``.

    ``palette=True`` (PNG): quantised to :data:`PALETTE_COLOURS` colours (median cut, no
    dithering), for rendered figures such as heatmap overlays.
    """
    from PIL import Image

    image = Image.fromarray(_to_rgb_uint8(rgb), mode="RGB")
    if max_side_px is not None and max(image.size) > max_side_px:
        image.thumbnail((max_side_px, max_side_px), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if fmt.upper() == "JPEG":
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    elif palette:
        quantised = image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT,
                                   dither=Image.Dither.NONE)
        quantised.save(buffer, format="PNG", optimize=True)
    else:
        image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
