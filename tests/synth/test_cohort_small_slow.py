"""On real files: a `small` standard cohort has no colour shortcut in tumour tiles."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_net.synth import generate_cohort
from tests.synth_helpers import colour_features, grouped_cv_auroc

openslide = pytest.importorskip("openslide")

TILE_PX = 224
TARGET_MPP = 0.5


def _tumour_tiles(out: Path, row: dict[str, str], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``n`` tiles (224 px at 0.5 um/px) lying wholly inside the tumour mask."""
    mask = np.asarray(Image.open(out / row["mask"])) > 127
    ds = int(row["mask_downsample"])
    read_px = round(TILE_PX * TARGET_MPP / float(row["level0_mpp"]))
    span = -(-read_px // ds)
    ys, xs = np.nonzero(mask)
    tiles = []
    with openslide.OpenSlide(out / row["path"]) as slide:
        for k in rng.permutation(len(ys)):
            y0, x0 = int(ys[k]), int(xs[k])
            if not mask[y0:y0 + span + 1, x0:x0 + span + 1].all() or mask[y0:y0 + span + 1].shape[0] <= span:
                continue
            region = slide.read_region((x0 * ds + ds, y0 * ds + ds), 0, (read_px, read_px)).convert("RGB")
            tiles.append(np.asarray(region.resize((TILE_PX, TILE_PX), Image.BILINEAR)))
            if len(tiles) == n:
                break
    return tiles


@pytest.mark.slow
def test_small_cohort_has_no_colour_shortcut(tmp_path: Path) -> None:
    out = tmp_path / "small"
    manifest = generate_cohort(out, n_slides=16, seed=3, preset="small", workers=2, preview=False,
                               tumour_fraction=(0.15, 0.6))
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["label"] for r in rows})
    feats, labels, groups = [], [], []
    rng = np.random.default_rng(0)
    for gi, row in enumerate(rows):
        for tile in _tumour_tiles(out, row, 8, rng):
            feats.append(colour_features(tile))
            labels.append(classes.index(row["label"]))
            groups.append(gi)
    assert len(set(groups)) >= 14, "most slides yield tumour tiles"
    auroc = grouped_cv_auroc(np.array(feats), np.array(labels), np.array(groups))
    assert auroc <= 0.65, f"colour statistics separate the classes (AUROC {auroc:.2f})"
