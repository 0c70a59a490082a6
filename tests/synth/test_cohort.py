"""Synthetic cohort: slides open with mpp and levels, truth files agree, determinism, the
taxonomy, balanced plans, nuisance draws shared by all subtypes, tumour-free slides."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_net.cli.main import main
from histo_net.cli.synth import SUBTYPE_CHOICES
from histo_net.io_utils import sha256_file
from histo_net.synth import MANIFEST_COLUMNS, build_spec, plan_cohort
from histo_net.synth.cohort import generate_slide
from histo_net.synth.layout import polygon_area
from histo_net.synth.render import render_region
from histo_net.taxonomy import (
    CONFIRMATORY_STAINS,
    LABELS,
    NEUROENDOCRINE,
    NORMAL,
    SUBTYPE_FEATURES,
    SUBTYPE_LABEL,
    SUBTYPES,
    TAXONOMY,
    TUMOUR_SUBTYPES,
)

openslide = pytest.importorskip("openslide")


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_manifest_columns_labels_subtypes_patients(tiny_cohort: Path) -> None:
    rows = _rows(tiny_cohort)
    assert len(rows) == 8
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    labels = [r["label"] for r in rows]
    assert labels.count(LABELS[0]) == labels.count(LABELS[1]) == 4
    for r in rows:
        assert r["label"] == SUBTYPE_LABEL[r["subtype"]] and r["difficulty"] == "easy"
    assert len({r["subtype"] for r in rows}) >= 5, "subtypes cycle within each label"
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(r["subtype"])
    assert all(len(v) == 1 for v in by_patient.values()), "a patient's slides share one tumour"
    assert len(by_patient) < len(rows), "some patients have two slides"
    assert (tiny_cohort.parent / "preview.png").stat().st_size > 10_000


def test_slides_open_in_openslide(tiny_cohort: Path) -> None:
    for r in _rows(tiny_cohort):
        with openslide.OpenSlide(tiny_cohort.parent / r["path"]) as slide:
            assert slide.properties["openslide.vendor"] == "aperio"
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(float(r["level0_mpp"]))
            assert slide.level_count >= 3
            assert slide.dimensions == (int(r["width"]), int(r["height"]))
            thumb = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"))
            assert thumb.min() < 150 and np.median(thumb) > 180, "tissue on bright glass"


def test_mask_geojson_and_pixels_agree(tiny_cohort: Path) -> None:
    base = tiny_cohort.parent
    for r in _rows(tiny_cohort):
        mask = np.asarray(Image.open(base / r["mask"])) > 127
        ds = int(r["mask_downsample"])
        width, height = int(r["width"]), int(r["height"])
        assert mask.shape == (-(-height // ds), -(-width // ds))
        gj = json.loads((base / r["annotations"]).read_text())
        assert gj["type"] == "FeatureCollection" and gj["features"]
        area = 0.0
        for feat in gj["features"]:
            props = feat["properties"]
            assert props["objectType"] == "annotation" and props["subtype"] == r["subtype"]
            assert props["classification"]["name"] == r["label"]
            ring = np.asarray(feat["geometry"]["coordinates"][0])
            assert ring[:, 0].min() >= 0 and ring[:, 0].max() <= width
            area += polygon_area(ring)
        assert abs(mask.sum() * ds * ds - area) / area < 0.05
        assert 0.10 <= float(r["tumour_fraction"]) <= 0.50  # easy: 0.15-0.45 of the tissue
        # the slide is darker (nuclei-rich tissue) inside the tumour mask than on glass
        with openslide.OpenSlide(base / r["path"]) as slide:
            lvl = slide.get_best_level_for_downsample(16)
            low = np.asarray(slide.read_region((0, 0), lvl, slide.level_dimensions[lvl]).convert("L"))
        sub = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(low.shape[::-1], Image.NEAREST)) > 0
        assert low[sub].mean() < low[~sub].mean() - 20, r["slide_id"]


def test_deterministic_by_seed(tiny_cohort: Path, tmp_path: Path) -> None:
    job = plan_cohort(8, 1, "tiny", difficulty="easy")[0]
    row = generate_slide(job, tmp_path)
    original = _rows(tiny_cohort)[0]
    assert row["slide_id"] == original["slide_id"] and row["subtype"] == original["subtype"]
    assert sha256_file(tmp_path / str(row["path"])) == sha256_file(tiny_cohort.parent / original["path"])
    assert (tmp_path / str(row["mask"])).read_bytes() == (tiny_cohort.parent / original["mask"]).read_bytes()
    other = plan_cohort(8, 2, "tiny", difficulty="easy")[0]
    a = render_region(build_spec(job), 1200, 1200, 96, 96, 2.0)
    b = render_region(build_spec(other), 1200, 1200, 96, 96, 2.0)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("subtype", ["nec_small_cell", "alveolar_rms_like"])
def test_nuclei_cross_tile_borders_whole(subtype: str) -> None:
    """Rendering a region in one piece or as two halves gives the same pixels (before noise)."""
    job = replace(plan_cohort(2, 5, "tiny", stain_jitter=0.0)[0], subtype=subtype, tumour_fraction=(0.5, 0.6))
    spec = build_spec(job)
    ys, xs = np.nonzero(spec.layout.tumour)
    x0, y0 = int(xs[len(xs) // 2]) * 16, int(ys[len(ys) // 2]) * 16
    whole = render_region(spec, x0, y0, 128, 64, 2.0).astype(int)
    left = render_region(spec, x0, y0, 64, 64, 2.0).astype(int)
    right = render_region(spec, x0 + 128, y0, 64, 64, 2.0).astype(int)
    halves = np.concatenate([left, right], axis=1)
    assert np.abs(whole - halves).mean() < 4.0  # only sensor noise differs
    assert whole.std() > 20  # there is structure to disagree about


def test_taxonomy_is_fixed_and_small_cell_is_neuroendocrine() -> None:
    assert LABELS == ("neuroendocrine", "other_small_round_cell")
    assert SUBTYPE_LABEL["nec_small_cell"] == SUBTYPE_LABEL["merkel_cell_like"] == NEUROENDOCRINE
    assert sorted(TAXONOMY) == sorted(LABELS) and all(len(v) == 3 for v in TAXONOMY.values())
    assert SUBTYPE_LABEL[NORMAL] == "" and SUBTYPES == (*TUMOUR_SUBTYPES, NORMAL)
    assert set(SUBTYPE_FEATURES) == set(CONFIRMATORY_STAINS) == set(SUBTYPES)
    assert SUBTYPE_CHOICES == TUMOUR_SUBTYPES, "the CLI's --subtypes choices follow the taxonomy"


def test_plan_balances_labels_subtypes_and_normals() -> None:
    jobs = plan_cohort(60, 3, "tiny")
    labels = [j.label for j in jobs]
    assert labels.count(LABELS[0]) == labels.count(LABELS[1]) == 30
    assert all([j.subtype for j in jobs].count(s) == 10 for s in TUMOUR_SUBTYPES)
    with_normal = plan_cohort(20, 3, "tiny", normal_fraction=0.25)
    assert sum(j.subtype == NORMAL for j in with_normal) == 5
    subset = plan_cohort(10, 3, "tiny", subtypes=["nec_small_cell", "ewing_like"])
    assert {j.subtype for j in subset} == {"nec_small_cell", "ewing_like"}
    assert {j.subtype for j in plan_cohort(4, 3, "tiny", tumour_fraction=(0.0, 0.0))} == {NORMAL}


def test_nuisance_draws_do_not_depend_on_subtype() -> None:
    """Hard by construction: at ``standard`` two slides that differ only in subtype share every
    nuisance draw (cells, stain, blur, JPEG, layout); at ``easy`` cells depend on the label."""
    job = plan_cohort(1, 11, "tiny")[0]
    specs = [build_spec(replace(job, subtype=s)) for s in TUMOUR_SUBTYPES]
    for spec in specs[1:]:
        assert spec.style.cells == specs[0].style.cells
        assert spec.stain == specs[0].stain and spec.jpeg_quality == specs[0].jpeg_quality
        assert np.array_equal(spec.layout.tumour, specs[0].layout.tumour)
        assert np.array_equal(spec.layout.fat, specs[0].layout.fat)
    assert len({spec.style.morph for spec in specs}) == len(specs), "morphology does differ"
    easy = [build_spec(replace(job, subtype=s, difficulty="easy")) for s in ("nec_small_cell", "ewing_like")]
    assert easy[0].style.cells != easy[1].style.cells


def test_normal_slides_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "normal"
    assert main(["synth", "--out", str(out), "--slides", "1", "--tumour-fraction", "0", "--no-preview",
                 "--seed", "4"]) == 0
    assert "synth" in capsys.readouterr().err, "a progress bar on stderr"
    for r in _rows(out / "manifest.csv"):
        assert r["subtype"] == NORMAL and r["label"] == "" and float(r["tumour_fraction"]) == 0
        assert not (np.asarray(Image.open(out / r["mask"])) > 0).any()
        assert json.loads((out / r["annotations"]).read_text())["features"] == []
        with openslide.OpenSlide(out / r["path"]) as slide:
            assert slide.level_count >= 2


@pytest.mark.parametrize("extra", [["--set", "nope=1"], ["--stain-jitter", "5"], ["--normal-fraction", "2"],
                                   ["--set", "tumour_fraction=[0.5, 0.2]"], ["--set", "subtypes=[carcinoid]"]])
def test_cli_usage_errors_exit_2(tmp_path: Path, extra: list[str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), "--slides", "1", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert not (tmp_path / "x" / "manifest.csv").exists()
