"""Heatmap grids (averaging, tissue masking) and PNG overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from histo_net.report.heatmap import (
    ROUNDING_GAP_PX,
    image_bytes,
    overlay_png,
    scores_to_grid,
    tissue_on_grid,
)

NAN = np.nan


def test_overlapping_tiles_are_averaged_hand_computed() -> None:
    # grid cell = 2 level-0 px; tiles are 4 px (2x2 cells); B overlaps A by one column
    coords = np.array([[0, 0], [2, 0]], dtype=np.int64)
    grid = scores_to_grid(coords, np.array([1.0, 3.0]), patch_size_level0=4, grid_shape=(4, 4),
                          grid_downsample=2.0)
    expected = np.array([[1, 2, 3, NAN], [1, 2, 3, NAN], [NAN] * 4, [NAN] * 4], dtype=np.float32)
    assert grid.dtype == np.float32
    np.testing.assert_array_equal(grid, expected)


def test_tissue_mask_blanks_background_hand_computed() -> None:
    coords = np.array([[0, 0], [2, 0], [0, 4]], dtype=np.int64)
    # mask at 4 level-0 px per pixel: top-right quadrant is background
    mask = np.array([[True, False], [True, True]])
    grid = scores_to_grid(coords, np.array([1.0, 3.0, 5.0]), patch_size_level0=4, grid_shape=(4, 4),
                          grid_downsample=2.0, tissue_mask=mask, tissue_downsample=4.0)
    expected = np.array([[1, 2, NAN, NAN], [1, 2, NAN, NAN], [5, 5, NAN, NAN], [5, 5, NAN, NAN]],
                        dtype=np.float32)
    np.testing.assert_array_equal(grid, expected)


def _brute_force(coords: np.ndarray, scores: np.ndarray, patch: int, shape: tuple[int, int],
                 ds: float) -> np.ndarray:
    total = np.zeros(shape)
    count = np.zeros(shape)
    for (x, y), s in zip(coords, scores):
        for i in range(shape[0]):
            for j in range(shape[1]):
                cx, cy = (j + 0.5) * ds, (i + 0.5) * ds
                if x <= cx < x + patch and y <= cy < y + patch:
                    total[i, j] += s
                    count[i, j] += 1
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def test_grid_matches_brute_force_on_random_overlapping_tiles() -> None:
    rng = np.random.default_rng(3)
    coords = rng.integers(0, 120, size=(40, 2)).astype(np.int64)
    scores = rng.uniform(0, 1, 40)
    grid = scores_to_grid(coords, scores, patch_size_level0=24, grid_shape=(17, 19),
                          grid_downsample=8.0)
    # footprints reach ROUNDING_GAP_PX further (closes 1 px gaps between rounded tile starts)
    reference = _brute_force(coords, scores, 24 + ROUNDING_GAP_PX, (17, 19), 8.0)
    np.testing.assert_allclose(grid, reference, rtol=1e-5)


def test_small_tiles_and_non_finite_scores() -> None:
    coords = np.array([[1, 1], [40, 40], [500, 500]], dtype=np.int64)
    grid = scores_to_grid(coords, np.array([0.5, np.nan, 0.9]), patch_size_level0=2,
                          grid_shape=(8, 8), grid_downsample=16.0)
    assert grid[0, 0] == pytest.approx(0.5)  # a tile smaller than a cell still shows
    assert np.isfinite(grid).sum() == 1  # NaN score ignored, off-grid tile clipped away


def test_tissue_on_grid_nearest_neighbour() -> None:
    mask = np.zeros((3, 3), dtype=bool)
    mask[1, 2] = True
    on_grid = tissue_on_grid(mask, 10.0, (6, 7), 5.0)  # 7th column lies beyond the mask
    expected = np.zeros((6, 7), dtype=bool)
    expected[2:4, 4:6] = True
    np.testing.assert_array_equal(on_grid, expected)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="coords"):
        scores_to_grid(np.zeros((3, 2), np.int64), np.zeros(2), patch_size_level0=4,
                       grid_shape=(4, 4), grid_downsample=1.0)


def test_overlay_png_transparent_nan_and_colorbar() -> None:
    thumb = np.zeros((60, 80, 3), dtype=np.uint8)
    thumb[..., 1] = 255  # pure green slide
    grid = np.full((60, 80), np.nan, dtype=np.float32)
    grid[:, :20] = np.linspace(0, 1, 60)[:, None]
    png = overlay_png(thumb, grid, title="P(neuroendocrine) per tile", colorbar_label="P",
                      vmin=0.0, vmax=1.0, cmap="inferno")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    h, w, _ = image.shape
    pure_green = (image[..., 0] < 10) & (image[..., 1] > 245) & (image[..., 2] < 10)
    assert pure_green.sum() > 0.2 * h * w  # NaN cells leave the thumbnail untouched
    # colorbar: a column in the right part running from near-black to inferno's yellow
    right = image[:, int(w * 0.75):]
    dark = (right.sum(axis=2) < 60).any(axis=0)
    yellow = ((right[..., 0] > 230) & (right[..., 1] > 230) & (right[..., 2] < 190)).any(axis=0)
    assert (dark & yellow).any()
    # the overlaid region is no longer pure green
    left_band = image[:, : int(w * 0.1)]
    assert not ((left_band[..., 1] > 245) & (left_band[..., 0] < 10)).all()


def test_image_bytes_jpeg_shrinks() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    out = Image.open(io.BytesIO(image_bytes(rgb, fmt="JPEG", max_side_px=100)))
    assert out.format == "JPEG" and max(out.size) == 100
