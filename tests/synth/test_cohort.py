"""Synthetic cohort: slides open with mpp and levels, truth files agree, determinism,
no colour shortcut between classes (while morphology does separate them)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_net.cli.main import main
from histo_net.io_utils import sha256_file
from histo_net.synth import DEFAULT_CLASSES, MANIFEST_COLUMNS, PRESETS, build_spec, plan_cohort
from histo_net.synth.cohort import generate_slide
from histo_net.synth.layout import polygon_area
from histo_net.synth.morphology import NE_PATTERNS, OTHER_PATTERNS, TumourStyle
from histo_net.synth.render import render_region, tumour_tile
from histo_net.synth.stain import sample_stain
from tests.synth_helpers import colour_features, grouped_cv_auroc, texture_features

openslide = pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    rc = main(["synth", "--out", str(out), "--slides", "8", "--preset", "tiny", "--seed", "1",
               "--workers", "2"])
    assert rc == 0
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_manifest_columns_labels_and_patients(tiny_cohort: Path) -> None:
    rows = _rows(tiny_cohort)
    assert len(rows) == 8
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    labels = [r["label"] for r in rows]
    assert sorted(set(labels)) == sorted(DEFAULT_CLASSES)
    assert labels.count(DEFAULT_CLASSES[0]) == labels.count(DEFAULT_CLASSES[1]) == 4
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(r["label"])
    assert all(len(v) == 1 for v in by_patient.values()), "a patient's slides share one label"
    assert len(by_patient) < len(rows), "some patients have two slides"
    other = [r["subpattern"] for r in rows if r["label"] == DEFAULT_CLASSES[1]]
    assert set(other) <= set(OTHER_PATTERNS) and len(set(other)) >= 2
    assert (tiny_cohort / "preview.png").stat().st_size > 10_000


def test_slides_open_in_openslide(tiny_cohort: Path) -> None:
    for r in _rows(tiny_cohort):
        with openslide.OpenSlide(tiny_cohort / r["path"]) as slide:
            assert slide.properties["openslide.vendor"] == "aperio"
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(float(r["mpp"]))
            assert slide.level_count >= 3
            assert slide.dimensions == (int(r["width"]), int(r["height"]))
            thumb = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"))
            assert thumb.min() < 150 and np.median(thumb) > 180, "tissue on bright glass"


def test_mask_geojson_and_pixels_agree(tiny_cohort: Path) -> None:
    for r in _rows(tiny_cohort):
        mask = np.asarray(Image.open(tiny_cohort / r["mask"])) > 127
        ds = int(r["mask_downsample"])
        width, height = int(r["width"]), int(r["height"])
        assert mask.shape == (-(-height // ds), -(-width // ds))
        gj = json.loads((tiny_cohort / r["annotations"]).read_text())
        assert gj["type"] == "FeatureCollection" and gj["features"]
        area = 0.0
        for feat in gj["features"]:
            assert feat["properties"]["objectType"] == "annotation"
            assert feat["properties"]["classification"]["name"] == r["label"]
            ring = np.asarray(feat["geometry"]["coordinates"][0])
            assert ring[:, 0].min() >= 0 and ring[:, 0].max() <= width
            area += polygon_area(ring)
        mask_area = mask.sum() * ds * ds
        assert abs(mask_area - area) / area < 0.05
        tissue_area = area / float(r["tumour_fraction"])
        assert 0.10 <= area / tissue_area <= 0.50
        # the slide is darker (nuclei-rich tissue) inside the tumour mask than on glass
        with openslide.OpenSlide(tiny_cohort / r["path"]) as slide:
            lvl = slide.get_best_level_for_downsample(16)
            low = np.asarray(slide.read_region((0, 0), lvl, slide.level_dimensions[lvl]).convert("L"))
        sub = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(low.shape[::-1], Image.NEAREST)) > 0
        assert low[sub].mean() < low[~sub].mean() - 20, r["slide_id"]


def test_deterministic_by_seed(tiny_cohort: Path, tmp_path: Path) -> None:
    job = plan_cohort(8, 1, "tiny", DEFAULT_CLASSES, None, "svs")[0]
    row = generate_slide(job, tmp_path)
    original = _rows(tiny_cohort)[0]
    assert row["slide_id"] == original["slide_id"] and row["subpattern"] == original["subpattern"]
    assert sha256_file(tmp_path / str(row["path"])) == sha256_file(tiny_cohort / original["path"])
    assert (tmp_path / str(row["mask"])).read_bytes() == (tiny_cohort / original["mask"]).read_bytes()
    other = plan_cohort(8, 2, "tiny", DEFAULT_CLASSES, None, "svs")[0]
    a = render_region(build_spec(job), 1200, 1200, 96, 96, 2.0)
    b = render_region(build_spec(other), 1200, 1200, 96, 96, 2.0)
    assert not np.array_equal(a, b)


def test_nuclei_cross_tile_borders_whole() -> None:
    """Rendering a region in one piece or as two halves gives the same pixels (before noise)."""
    job = plan_cohort(2, 5, "tiny", DEFAULT_CLASSES, 0.0, "svs")[0]
    spec = build_spec(job)
    ys, xs = np.nonzero(spec.layout.tumour)
    x0, y0 = int(xs[len(xs) // 2]) * 16, int(ys[len(ys) // 2]) * 16
    whole = render_region(spec, x0, y0, 128, 64, 2.0).astype(int)
    left = render_region(spec, x0, y0, 64, 64, 2.0).astype(int)
    right = render_region(spec, x0 + 128, y0, 64, 64, 2.0).astype(int)
    halves = np.concatenate([left, right], axis=1)
    assert np.abs(whole - halves).mean() < 4.0  # only sensor noise differs
    assert whole.std() > 20  # there is structure to disagree about


def _tumour_tiles(n_slides: int, tiles_per_slide: int, jitter: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tumour-region tiles (224 px at 0.5 um/px) of both classes, one stain per slide."""
    tiles, labels, groups = [], [], []
    for s in range(n_slides):
        label = s % 2
        family = NE_PATTERNS if label == 0 else OTHER_PATTERNS
        pattern = family[(s // 2) % len(family)]
        rng = np.random.default_rng([7, s])
        stain = sample_stain(rng, jitter)
        style = TumourStyle(pattern, 500 + s, scale=float(rng.uniform(0.93, 1.07)),
                            orientation=float(rng.uniform(0, np.pi)))
        for k in range(tiles_per_slide):
            tiles.append(tumour_tile(style, stain, 900 + 1100 * k, 700 + 600 * (k % 2)))
            labels.append(label)
            groups.append(s)
    return np.stack(tiles), np.array(labels), np.array(groups)


def test_no_colour_shortcut_but_morphology_differs() -> None:
    tiles, y, groups = _tumour_tiles(n_slides=24, tiles_per_slide=3, jitter=PRESETS["small"].stain_jitter)
    colour = np.stack([colour_features(t) for t in tiles])
    auroc_colour = grouped_cv_auroc(colour, y, groups)
    assert auroc_colour <= 0.65, f"colour alone separates the classes (AUROC {auroc_colour:.2f})"
    texture = np.stack([texture_features(t) for t in tiles])
    auroc_texture = grouped_cv_auroc(texture, y, groups)
    assert auroc_texture >= 0.8, f"texture does not separate the classes (AUROC {auroc_texture:.2f})"


@pytest.mark.parametrize("extra", [["--set", "nope=1"], ["--stain-jitter", "5"],
                                   ["--classes", "a", "a"], ["--classes", "a", "b", "c", "d", "e"]])
def test_cli_usage_errors_exit_2(tmp_path: Path, extra: list[str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), "--slides", "1", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not (tmp_path / "x" / "manifest.csv").exists()
