"""Write one slide's report: report.json, report.html, heatmap PNGs, tiles.geojson.

Takes a :class:`~histo_net.report.model.SlideReport` (never models or slide files). Every
file is written atomically inside the slide's output folder; nothing from slide metadata or
file names is used to build a path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from histo_net.io_utils import atomic_write_bytes, atomic_write_text, json_safe, safe_child
from histo_net.report.geojson import build_geojson
from histo_net.report.heatmap import compact_for_html, image_bytes, overlay_png, scores_to_grid
from histo_net.report.html import render_report_html
from histo_net.report.model import (
    REPORT_SCHEMA_VERSION,
    RESEARCH_USE_ONLY,
    SlideReport,
    attention_title,
    decision_json,
    heatmap_classes,
    prob_file_name,
)

logger = logging.getLogger(__name__)

HEATMAP_MAX_PX = 1024  # longest side of the thumbnail heatmaps are drawn on


def display_thumbnail(report: SlideReport, max_px: int = HEATMAP_MAX_PX) -> tuple[np.ndarray, float]:
    """The report thumbnail shrunk to at most ``max_px`` (H, W, 3) and its level-0 downsample."""
    from PIL import Image

    thumb = report.thumbnail
    h, w = thumb.shape[:2]
    scale = max(h, w) / max_px
    if scale <= 1.0:
        return thumb, float(report.thumbnail_downsample)
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    small = np.asarray(Image.fromarray(thumb[:, :, :3]).resize(size, Image.Resampling.BOX))
    return small, float(report.thumbnail_downsample) * w / size[0]


def _grid(report: SlideReport, scores: np.ndarray, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """(H, W) float32 grid on a thumbnail of ``shape`` / ``downsample``, NaN off tissue / off tiles."""
    return scores_to_grid(report.coords_level0, scores, patch_size_level0=report.patch_size_level0,
                          grid_shape=shape, grid_downsample=downsample,
                          tissue_mask=report.tissue_mask, tissue_downsample=report.tissue_downsample)


def attention_color_range(grid: np.ndarray, min_span: float = 0.5) -> tuple[float, float]:
    """Colour limits for relative attention: 1st-99th percentile, at least ``min_span`` wide.

    The minimum span keeps near-uniform attention one mid colour instead of stretching
    noise over the whole colormap (or saturating it).
    """
    finite = grid[np.isfinite(grid)]
    if finite.size == 0:
        return 0.0, 2.0
    lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
    if hi - lo < min_span:
        centre = (hi + lo) / 2.0
        lo, hi = centre - min_span / 2.0, centre + min_span / 2.0
    return max(lo, 0.0), max(hi, min_span)


def render_images(report: SlideReport) -> dict[str, bytes]:
    """PNG bytes by role: ``thumbnail``, ``attention``, ``prob_<class>`` for each heatmap class."""
    n = max(report.tile_count, 1)
    relative = np.asarray(report.attention, dtype=np.float64) * n  # 1 = uniform share
    images: dict[str, bytes] = {"thumbnail": image_bytes(report.thumbnail, fmt="PNG")}
    thumb, downsample = display_thumbnail(report)
    grid = _grid(report, relative, thumb.shape[:2], downsample)
    vmin, vmax = attention_color_range(grid)
    images["attention"] = overlay_png(
        thumb, grid, title=attention_title(report),
        colorbar_label="relative attention (1 = uniform share)", cmap="inferno",
        vmin=vmin, vmax=vmax)
    probs = np.asarray(report.tile_probs, dtype=np.float64).reshape(
        report.tile_count, len(report.tile_class_names))
    for cls in heatmap_classes(report):
        column = probs[:, report.tile_class_names.index(cls)]
        images[f"prob_{cls}"] = overlay_png(
            thumb, _grid(report, column, thumb.shape[:2], downsample), title=f"P({cls}) per tile (tile classifier)",
            colorbar_label=f"P({cls})", cmap="viridis", vmin=0.0, vmax=1.0)
    return images


def build_report_json(report: SlideReport, files: dict[str, str] | None = None) -> dict:
    """report.json content: prediction, calibrated probabilities, status, band, QC, provenance.

    JSON-safe (NaN becomes null). ``files`` maps role -> file name in the slide folder.
    """
    prob = report.probabilities.get(report.predicted_class)
    attention = np.asarray(report.attention, dtype=np.float64)
    return json_safe({
        "schema_version": REPORT_SCHEMA_VERSION,
        "slide_id": report.slide_id,
        "slide_name": report.slide_name,
        "predicted_class": report.predicted_class,
        "probability": prob,
        "status": report.status,
        "indeterminate": report.indeterminate,
        "probabilities": dict(report.probabilities),
        "subtype_probabilities": dict(report.subtype_probabilities),
        "positive_class": report.positive_class,
        "threshold": report.threshold,
        "indeterminate_band": list(report.indeterminate_band),
        "label": report.label,
        "tile_class_names": list(report.tile_class_names),
        "tile_count": report.tile_count,
        "patch_size_level0": report.patch_size_level0,
        "attention_max": float(attention.max()) if attention.size else None,
        "qc": dict(report.qc),
        "provenance": dict(report.provenance),
        "files": dict(files or {}),
        "disclaimer": RESEARCH_USE_ONLY,
        **decision_json(report),
    })


def write_slide_report(slide_dir: Path, report: SlideReport) -> dict[str, str]:
    """Write every report file into ``slide_dir``; return ``{role: file name}``.

    Files: thumbnail.png, attention.png, prob_<class>.png, tiles.geojson, report.json,
    report.html (written last, so its presence means the rest exist).
    """
    slide_dir = Path(slide_dir)
    slide_dir.mkdir(parents=True, exist_ok=True)
    images = render_images(report)
    files: dict[str, str] = {}
    for role, data in images.items():
        name = prob_file_name(role[len("prob_"):]) if role.startswith("prob_") else f"{role}.png"
        atomic_write_bytes(safe_child(slide_dir, name), data)
        files[role] = name
    geojson = build_geojson(report)
    atomic_write_text(safe_child(slide_dir, "tiles.geojson"), json.dumps(geojson, allow_nan=False))
    files["geojson"] = "tiles.geojson"
    files["report_json"] = "report.json"
    files["report_html"] = "report.html"
    payload = build_report_json(report, files)
    atomic_write_text(safe_child(slide_dir, "report.json"),
                      json.dumps(payload, indent=2, allow_nan=False) + "\n")
    # the HTML embeds compact JPEGs of the same figures (the PNG files stay beside it)
    html_images = {role: compact_for_html(data) for role, data in images.items()
                   if role != "thumbnail"}
    atomic_write_text(safe_child(slide_dir, "report.html"), render_report_html(report, html_images))
    logger.info("wrote report for %s into %s", report.slide_id, slide_dir)
    return files
