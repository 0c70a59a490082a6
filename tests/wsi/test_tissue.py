"""histo_net.wsi.tissue: saturation/Otsu tissue detection with um-based clean-up."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histo_net.config import TissueConfig
from histo_net.wsi.tissue import otsu_threshold, saturation, tissue_mask
from tests.slide_fixtures import GLASS_RGB, blank_image, he_like_image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_blank_glass_gives_no_tissue() -> None:
    assert not tissue_mask(blank_image(200, 300), mpp=8.0).any()
    assert not tissue_mask(np.full((50, 50, 3), 255, np.uint8), mpp=8.0).any()
    assert not tissue_mask(np.zeros((50, 50, 3), np.uint8), mpp=8.0).any()


def test_mask_matches_truth_at_thumbnail_resolution() -> None:
    rgb, truth = he_like_image(512, 768, seed=3)
    mask = tissue_mask(rgb, mpp=4.0)
    assert mask.shape == truth.shape and mask.dtype == bool
    assert _iou(mask, truth) > 0.95
    # downscaled 4x (16 um/px) still finds the same tissue
    small = np.asarray(Image.fromarray(rgb).reduce(4))
    small_truth = truth[2::4, 2::4]
    assert _iou(tissue_mask(small, mpp=16.0), small_truth) > 0.9


def test_small_objects_dropped_and_small_holes_filled() -> None:
    rgb = np.empty((300, 300, 3), np.uint8)
    rgb[...] = GLASS_RGB
    purple = (120, 70, 160)
    rgb[20:120, 20:120] = purple       # 100x100 px at 4 um = 160,000 um2: kept
    rgb[280:285, 20:25] = purple       # 25 px = 400 um2 < 20,000: dropped
    rgb[60:65, 60:65] = GLASS_RGB      # 400 um2 hole: filled
    rgb[150:290, 150:290] = purple
    rgb[170:270, 170:270] = GLASS_RGB  # 160,000 um2 hole > 50,000: stays open
    cfg = TissueConfig(closing_um=0.0, max_hole_area_um2=50_000.0)
    mask = tissue_mask(rgb, mpp=4.0, cfg=cfg)
    assert mask[20:120, 20:120].all()
    assert not mask[270:295, 10:35].any()
    assert mask[62, 62]
    assert not mask[200:240, 200:240].any()
    # the min-area rule is in um2: the same image at 40 um/px is 100x larger in area
    coarse = tissue_mask(rgb, mpp=40.0, cfg=cfg.model_copy(update={"max_hole_area_um2": 0.0}))
    assert coarse[282, 22]


def test_all_tissue_image_is_not_split_by_otsu() -> None:
    rgb, truth = he_like_image(256, 256, seed=5, ellipses=((0.5, 0.5, 2.0, 2.0),))
    assert truth.all()
    assert tissue_mask(rgb, mpp=2.0).mean() > 0.97


def test_otsu_separates_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.03, 0.01, 5000), rng.normal(0.4, 0.05, 3000)])
    t = otsu_threshold(np.clip(values, 0, 1))
    assert 0.1 < t < 0.3  # inside the gap between the modes, not at its edge
    assert otsu_threshold(np.zeros(100)) == 0.0


def test_saturation_values() -> None:
    rgb = np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 0], [200, 100, 100]]], np.uint8)
    np.testing.assert_allclose(saturation(rgb)[0], [0.0, 1.0, 0.0, 0.5])


def test_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        tissue_mask(np.zeros((10, 10), np.uint8), mpp=8.0)


def test_dark_border_and_ink_are_not_tissue() -> None:
    rgb, truth = he_like_image(256, 384, seed=7)
    noisy_black = np.random.default_rng(0).integers(5, 35, (256, 40, 3)).astype(np.uint8)
    rgb[:, -40:] = noisy_black  # scanner border: dark, noisy, highly "saturated"
    truth[:, -40:] = False
    assert (saturation(noisy_black) > 0.2).mean() > 0.5
    mask = tissue_mask(rgb, mpp=4.0)
    assert not mask[:, -30:].any() and _iou(mask, truth) > 0.9
    assert tissue_mask(rgb, mpp=4.0, cfg=TissueConfig(dark_floor=0))[:, -30:].mean() > 0.5


def _faded(rgb: np.ndarray, strength: float) -> np.ndarray:
    """The image with its stain at ``strength`` (1 = as is, 0 = white): ``255 - k (255 - rgb)``."""
    return np.round(255 - strength * (255 - rgb.astype(np.float32))).astype(np.uint8)


def test_faint_section_on_clean_glass_is_found() -> None:
    rgb, truth = he_like_image(400, 600, seed=11)
    faint = _faded(rgb, 0.2)  # tissue saturation mostly 0.03-0.07, glass about 0.004
    assert np.median(saturation(faint)[truth]) < 0.07
    mask = tissue_mask(faint, mpp=8.0)
    assert (mask & truth).sum() / truth.sum() > 0.9
    assert (mask & ~truth).sum() / mask.sum() < 0.05


def test_tinted_glass_keeps_the_configured_floor() -> None:
    rgb, truth = he_like_image(300, 400, seed=4)
    noise = np.random.default_rng(0).normal(0, 2, ((~truth).sum(), 3))
    rgb[~truth] = np.clip(np.array([228, 234, 246]) + noise, 0, 255).astype(np.uint8)  # sat ~0.07
    mask = tissue_mask(rgb, mpp=4.0)
    assert (mask & ~truth).sum() / mask.sum() < 0.02
    assert (mask & truth).sum() / truth.sum() > 0.95


def test_pale_stroma_beside_dense_tumour_is_kept() -> None:
    dense, truth = he_like_image(400, 600, seed=12, ellipses=((0.3, 0.5, 0.22, 0.4),))
    pale, pale_truth = he_like_image(400, 600, seed=13, ellipses=((0.72, 0.5, 0.2, 0.4),))
    pale = _faded(pale, 0.45)  # stroma: saturation about 0.1-0.2 beside tumour at 0.3-0.5
    rgb = np.where(pale_truth[..., None], pale, dense)
    sat = saturation(rgb)
    assert np.median(sat[pale_truth]) < 0.2 < np.median(sat[truth])
    mask = tissue_mask(rgb, mpp=8.0)
    assert (mask & pale_truth).sum() / pale_truth.sum() > 0.9
    assert (mask & truth).sum() / truth.sum() > 0.95


def test_fat_enclosed_by_tissue_counts_as_tissue() -> None:
    rgb, _ = he_like_image(400, 400, seed=14, ellipses=((0.5, 0.5, 0.4, 0.4),))
    yy, xx = np.mgrid[0:400, 0:400]
    fat = (yy - 200) ** 2 + (xx - 200) ** 2 < 45**2  # 6,360 px at 4 um = 0.10 mm2 of adipocytes
    rgb[fat] = GLASS_RGB
    mask = tissue_mask(rgb, mpp=4.0)
    assert mask[fat].mean() > 0.99


def test_opencv_morphology_equals_scipy() -> None:
    from scipy import ndimage

    from histo_net.wsi import tissue

    rng = np.random.default_rng(1)
    for _ in range(4):
        mask = ndimage.binary_opening(rng.random((120, 170)) < rng.uniform(0.3, 0.7))
        labels, _ = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())
        keep = sizes >= 30
        keep[0] = False
        np.testing.assert_array_equal(tissue._remove_small(mask, 30), keep[labels])
        holes, _ = ndimage.label(~mask)
        hole_sizes = np.bincount(holes.ravel())
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        fill = hole_sizes <= 30
        fill[0] = False
        fill[border] = False
        np.testing.assert_array_equal(tissue._fill_small_holes(mask, 30), mask | fill[holes])
        np.testing.assert_array_equal(tissue.erode_mask(mask, 2),
                                      ndimage.binary_erosion(mask, iterations=2, border_value=0))
        padded = np.pad(mask, 4)
        disk = tissue._disk(3)
        np.testing.assert_array_equal(tissue._closing(padded, disk)[4:-4, 4:-4],
                                      ndimage.binary_closing(padded, structure=disk)[4:-4, 4:-4])
