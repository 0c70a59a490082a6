"""Heatmaps without seams between tiles, and a compact report.html."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from histo_net.report.heatmap import compact_for_html, image_mime, overlay_png, scores_to_grid
from histo_net.report.write import write_slide_report
from tests.report.test_write import make_report


@pytest.mark.parametrize("grid_downsample", [2.3, 7.3, 11.1])
def test_no_uncovered_cells_between_adjacent_tiles(grid_downsample: float) -> None:
    """An Aperio slide at 0.2527 um/px tiled at 0.5 um/px: starts are rounded, so tiles are
    443 px wide on a 443.2 px step and neighbours sit up to 1 px apart."""
    stride_l0 = 224 * 0.5 / 0.2527
    patch = round(stride_l0)
    starts = np.round(np.arange(20) * stride_l0).astype(np.int64)
    coords = np.array([(x, y) for y in starts for x in starts], np.int64)
    side = int(np.ceil((starts[-1] + patch) / grid_downsample))
    grid = scores_to_grid(coords, np.ones(len(coords)), patch_size_level0=patch,
                          grid_shape=(side, side), grid_downsample=grid_downsample)
    inner = grid[1:-2, 1:-2]
    assert not np.isnan(inner).any(), f"{np.isnan(inner).sum()} uncovered cells (seams)"


def test_heatmaps_are_palette_png_on_disk_and_jpeg_in_the_html(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    thumb = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)  # noisy, photograph-like
    grid = rng.random((30, 40))
    png = overlay_png(thumb, grid, title="t", colorbar_label="c")
    assert image_mime(png) == "image/png" and png[25] == 3  # IHDR colour type 3: palette
    jpeg = compact_for_html(png)
    assert image_mime(jpeg) == "image/jpeg" and len(jpeg) < len(png)
    write_slide_report(tmp_path, make_report())
    html = (tmp_path / "report.html").read_text()
    mimes = re.findall(r"data:(image/\w+);base64,", html)
    assert mimes and "image/png" not in mimes  # every embedded image is a JPEG
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
