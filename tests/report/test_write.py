"""Report files: JSON, self-contained escaped HTML, optional Chromium screenshot (GeoJSON:
test_geojson.py)."""

from __future__ import annotations

import functools
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_net.features.ood import DomainCheck
from histo_net.report.html import render_report_html
from histo_net.report.model import GalleryTile, SlideReport
from histo_net.report.write import (
    attention_color_range,
    build_report_json,
    render_images,
    write_slide_report,
)

ROOT = Path(__file__).resolve().parents[2]
TILE_CLASSES = ["non_tumour", "neuroendocrine", "other_small_round_cell"]
EVIL = "evil<script>alert(1)</script>..svs"


def make_report(status: str = "ok", predicted: str = "neuroendocrine", n_side: int = 4,
                slide_name: str = "slide_01.svs") -> SlideReport:
    """A small plausible report: 4x4 overlapping tiles on a 64x64 thumbnail."""
    rng = np.random.default_rng(7)
    patch, stride, ds = 64, 48, 4.0
    ys, xs = np.mgrid[0:n_side, 0:n_side] * stride
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    n = len(coords)
    probs = rng.dirichlet(np.ones(3), size=n)
    probs[0, :] = np.nan  # one broken tile must not break JSON
    attention = rng.uniform(0.1, 1, n)
    attention /= attention.sum()
    thumb = rng.integers(120, 255, (64, 64, 3), dtype=np.uint8)
    tissue = np.ones((32, 32), dtype=bool)
    tissue[:, 24:] = False
    gallery = [GalleryTile(rgb=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                           coords_level0=(int(coords[i, 0]), int(coords[i, 1])),
                           attention=float(attention[i]),
                           probs=dict(zip(TILE_CLASSES, map(float, probs[(i + 1) % n]))))
               for i in range(3)]
    p_net = 0.52 if status == "indeterminate" else 0.91 if predicted == "neuroendocrine" else 0.08
    return SlideReport(
        slide_id="slide_01", slide_name=slide_name, predicted_class=predicted, status=status,
        probabilities={"neuroendocrine": p_net, "other_small_round_cell": 1 - p_net},
        positive_class="neuroendocrine", threshold=0.5, indeterminate_band=(0.35, 0.65),
        tile_class_names=list(TILE_CLASSES), coords_level0=coords, patch_size_level0=patch,
        attention=attention, tile_probs=probs, thumbnail=thumb, thumbnail_downsample=ds,
        tissue_mask=tissue, tissue_downsample=2 * ds, top_tiles=gallery, bottom_tiles=gallery[:1],
        qc={"tissue_area_mm2": 1.5, "tile_count": n, "mpp": 0.25, "mpp_source": "metadata",
            "target_mpp": 0.5, "tile_size_px": 32, "blurred_fraction": 0.1,
            "stain_distance": float("nan"), "stain_in_range": False,
            "warnings": ["stain differs from the training cohort"]},
        provenance={"input_path": "/data/slide_01.svs", "input_sha256": "ab" * 32,
                    "run_date": "2026-11-24T01:00:00+00:00", "versions": {"torch": "2.6"}},
        label="neuroendocrine")


def test_report_json_is_json_safe_and_complete() -> None:
    payload = build_report_json(make_report(status="indeterminate"), {"report_html": "report.html"})
    text = json.dumps(payload, allow_nan=False)  # raises on NaN
    back = json.loads(text)
    assert back["status"] == "indeterminate" and back["indeterminate"]
    assert back["predicted_class"] == "neuroendocrine"
    assert back["probabilities"]["neuroendocrine"] == pytest.approx(0.52)
    assert back["indeterminate_band"] == [0.35, 0.65]
    assert back["qc"]["stain_distance"] is None and back["qc"]["tile_count"] == 16
    assert back["provenance"]["input_sha256"] == "ab" * 32
    assert back["files"] == {"report_html": "report.html"}


def test_write_slide_report_files(tmp_path: Path) -> None:
    files = write_slide_report(tmp_path / "s", make_report())
    names = set(files.values())
    assert {"report.json", "report.html", "attention.png", "tiles.geojson",
            "prob_neuroendocrine.png", "prob_other_small_round_cell.png"} <= names
    assert {p.name for p in (tmp_path / "s").iterdir()} == names  # no temp files left
    for name in names:
        if name.endswith(".png"):
            Image.open(tmp_path / "s" / name).verify()
    saved = json.loads((tmp_path / "s" / "report.json").read_text())
    assert saved["files"] == files
    features = json.loads((tmp_path / "s" / "tiles.geojson").read_text())["features"]
    assert sum(f["properties"]["objectType"] == "tile" for f in features) == 16


def test_heatmaps_differ_per_class() -> None:
    images = render_images(make_report())
    assert images["prob_neuroendocrine"] != images["prob_other_small_round_cell"] != images["attention"]
    assert Image.open(io.BytesIO(images["attention"])).size[0] > 200


@functools.lru_cache(maxsize=4)
def _images(status: str, predicted: str) -> dict[str, bytes]:
    """Heatmaps depend only on arrays, status and class; render each variant once."""
    return render_images(make_report(status=status, predicted=predicted))


def test_attention_color_range_spreads_peaks_and_keeps_uniform_flat() -> None:
    peaked = np.concatenate([np.full(98, 0.5), np.full(2, 25.0)]).reshape(10, 10)
    lo, hi = attention_color_range(peaked)
    assert lo == pytest.approx(0.5) and hi > 20
    uniform = np.full((4, 4), 1.0)
    uniform[0, 0] = np.nan
    lo, hi = attention_color_range(uniform)
    assert lo == pytest.approx(0.75) and hi == pytest.approx(1.25)  # uniform -> one mid colour


def _html(report: SlideReport) -> str:
    """The report's HTML with the base64 image payloads blanked (so words are not found in them)."""
    html = render_report_html(report, _images(report.status, report.predicted_class))
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "data:image/x;base64,", html)


def test_html_self_contained_with_banner_and_context() -> None:
    html = _html(make_report())
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", html, flags=re.IGNORECASE)
    assert refs and all(ref.startswith("data:image/") for ref in refs)
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    assert "Research use only" in html
    assert "neuroendocrine" in html and "91%" in html
    assert "Indeterminate" not in html
    assert "Synaptophysin" in html and "INSM1" in html and "Ki-67" in html and "TTF-1" in html
    assert "CD99" not in html  # only the predicted class's box
    assert "OUT OF RANGE" in html and "stain differs" in html  # QC warning shown
    assert html.count("<img") == 4 + 3 + 1  # thumbnail, attention, 2 class maps; gallery 3 + 1


def test_html_other_class_and_indeterminate_wording() -> None:
    other = _html(make_report(predicted="other_small_round_cell"))
    assert "CD99" in other and "NKX2.2" in other and "CD45" in other and "Desmin" in other
    assert "CK20" not in other and "TTF-1" not in other  # Merkel and small-cell carcinoma are neuroendocrine
    indet = _html(make_report(status="indeterminate"))
    assert "Indeterminate \u2014 refer for immunohistochemistry" in indet
    assert "CD99" in indet and "Ki-67" in indet  # both work-ups when undecided


def test_html_escapes_script_in_names_and_metadata() -> None:
    report = make_report(slide_name=EVIL)
    report.provenance["scanner"] = "<script>steal()</script>"
    report.qc["warnings"] = ['<img src=x onerror="alert(2)">']
    report.label = "<b>bold</b>"
    html = _html(report)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "<b>bold" not in html
    assert "&lt;b&gt;bold" in html


@pytest.mark.skipif(
    not any(__import__("shutil").which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
    reason="chromium not installed (apt-get install chromium) - report screenshot not checked")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    write_slide_report(tmp_path / "slide", make_report(slide_name=EVIL))
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "screenshot_report.py"),
         str(tmp_path / "slide" / "report.html"), str(png), "--height", "1400"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shot = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert shot.shape[:2] == (1400, 1280)
    # the red research-use banner is at the top and the page is not blank
    top = shot[:20, :, :]
    assert ((top[..., 0] > 150) & (top[..., 1] < 80)).mean() > 0.5
    assert shot.std() > 20


def _check(name: str, group: str, value: float, limit: float, kind: str, passed: bool) -> DomainCheck:
    return DomainCheck(name=name, group=group, label=name.split(":")[0].replace("_", " "), value=value,
                       limit=limit, kind=kind, passed=passed)


def test_no_tumour_outcome_has_no_stain_panel_and_says_why() -> None:
    report = make_report(status="no_tumour_detected", predicted=None)
    report.outcome = "no_tumour_detected"
    report.checks = [_check("tumour_share:min", "tumour", 0.004, 0.03, "min", False)]
    report.qc["tumour_share"] = 0.004
    html = " ".join(_html(report).split())
    assert "No tumour detected" in html and "no stain panel" in html.lower()
    for marker in ("Synaptophysin", "CD99", "CD45", "Ki-67"):
        assert marker not in html, marker
    assert "0.004 &lt; limit 0.03" in html and "0.4% of tiled" in html
    data = build_report_json(report)
    assert data["outcome"] == "no_tumour_detected" and data["predicted_class"] is None
    assert data["failed_checks"] == ["tumour share 0.004 < limit 0.03"]
    assert data["statement"].startswith("No tumour detected")


def test_not_assessable_outcome_lists_the_failed_check_with_value_and_limit() -> None:
    report = make_report(status="not_assessable", predicted=None)
    report.outcome = "not_assessable"
    report.checks = [_check("tissue_mm2:min", "image", 5.0, 1.0, "min", True),
                     _check("stain_eosin:max", "image", 0.91, 0.42, "max", False)]
    html = " ".join(_html(report).split())
    assert "Not assessable" in html and "stain eosin 0.91 &gt; limit 0.42" in html
    assert "FAILED" in html and "Synaptophysin" not in html and "CD99" not in html
    data = build_report_json(report)
    assert data["outcome"] == "not_assessable" and len(data["checks"]) == 2
    assert data["checks"][1]["passed"] is False and data["checks"][1]["limit"] == 0.42


def test_indeterminate_names_the_leaning_class_and_model_figures_are_near_the_call() -> None:
    report = make_report(status="indeterminate")
    report.outcome = "indeterminate"
    report.model_figures = {"validation_slides": 12, "validation_auroc": 0.97,
                            "validation_balanced_accuracy": 0.91, "test_slides": 10, "test_auroc": 0.95,
                            "test_balanced_accuracy": 0.9}
    report.calibration = {"n_slides": 40, "method": "cross_fit",
                          "n_per_class": {"neuroendocrine": 20, "other_small_round_cell": 20}}
    report.model_warnings = ["validation slide AUROC 0.610 is below the floor 0.80"]
    html = _html(report)
    result = " ".join(html[html.index('id="h-result"'):html.index('id="h-maps"')].split())
    assert "Highest probability: neuroendocrine (52%)" in result
    assert "validation AUROC 0.97" in result and "calibration on 40 slides" in result
    assert "Model warning: validation slide AUROC 0.610" in result
    assert "decision threshold 0.50" in result


def test_no_stain_panel_for_classes_it_does_not_describe() -> None:
    """A bundle with its own class names (not this taxonomy) gets no confirmatory panel."""
    report = make_report()
    report.probabilities = {"tumour_a": 0.9, "tumour_b": 0.1}
    report.predicted_class, report.outcome = "tumour_a", "tumour_a"
    html = _html(report)
    assert "Synaptophysin" not in html and "CD99" not in html
