"""``target: subtype``: the MIL head learns subtypes; the call, evaluate and the report carry both levels.

The stage-1 tile CNN and the features of the shared tiny run are reused (a copy of the run),
so only the MIL stage trains again with the new target.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from histo_net.cli.main import main
from histo_net.models.bundle import load_bundle
from histo_net.taxonomy import SUBTYPE_LABEL, TUMOUR_SUBTYPES
from tests.train.conftest import FAST


@pytest.fixture(scope="module")
def subtype_run(trained_run: Path, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("subtype") / "RUN"
    shutil.copytree(trained_run, run)
    (run / "model.pt").unlink()
    stage1 = (run / "checkpoints" / "tile_cnn.pt").stat().st_mtime_ns
    assert main(["train", "--manifest", str(tiny_cohort), "--out", str(run), *FAST,
                 "--set", "target=subtype"]) == 0
    assert (run / "checkpoints" / "tile_cnn.pt").stat().st_mtime_ns == stage1  # only MIL retrained
    return run


def test_bundle_has_one_mil_output_per_subtype_grouped_by_label(subtype_run: Path, tiny_cohort: Path) -> None:
    bundle = load_bundle(subtype_run / "model.pt")
    with open(tiny_cohort, newline="") as fh:
        present = {r["subtype"] for r in csv.DictReader(fh)}
    head = bundle.subtype_head
    assert head is not None and set(head.names) == present
    assert list(head.names) == [s for s in TUMOUR_SUBTYPES if s in present]  # taxonomy order
    assert [bundle.class_names[g] for g in head.groups] == [SUBTYPE_LABEL[s] for s in head.names]
    assert bundle.build_mil().num_classes == len(head.names)
    assert bundle.class_names == ["neuroendocrine", "other_small_round_cell"]


def test_metrics_carry_the_subtype_differential(subtype_run: Path) -> None:
    metrics = json.loads((subtype_run / "metrics.json").read_text())
    sm = metrics["subtype_metrics"]
    assert sm["n_slides"] == metrics["n_slides"] >= 1
    k = len(sm["subtype_names"])
    assert np.asarray(sm["confusion_matrix"]).shape == (k, k)
    assert int(np.asarray(sm["confusion_matrix"]).sum()) == sm["n_slides"]
    for row in metrics["per_slide"]:
        probs = row["subtype_probabilities"]
        assert set(probs) == set(sm["subtype_names"]) and math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
        for cls, p_cls in row["probabilities"].items():  # each class's subtypes add up to the call
            assert math.isclose(sum(v for s, v in probs.items() if SUBTYPE_LABEL[s] == cls), p_cls, abs_tol=1e-5)
        assert row["subtype_predicted"] == max(probs, key=probs.get)
    assert "Subtype differential" in (subtype_run / "report.md").read_text()


def test_evaluate_and_predict_show_both_levels(subtype_run: Path, tiny_heldout_cohort: Path,
                                               tmp_path: Path) -> None:
    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(subtype_run / "model.pt"), "--manifest",
                 str(tiny_heldout_cohort), "--out", str(ev), "--workers", "0"]) == 0
    sm = json.loads((ev / "metrics.json").read_text())["subtype_metrics"]
    assert sm["n_slides"] == 8 and 0.0 <= sm["accuracy"] <= 1.0
    slide = tiny_heldout_cohort.parent / "slides" / "synth_000.svs"
    out = tmp_path / "pred"
    assert main(["predict", str(slide), "--model", str(subtype_run / "model.pt"), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    report = json.loads((out / "synth_000" / "report.json").read_text())
    subs = report["subtype_probabilities"]
    assert subs and math.isclose(sum(subs.values()), 1.0, abs_tol=1e-6)
    html = (out / "synth_000" / "report.html").read_text()
    assert "Subtype differential" in html
    with open(out / "predictions.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["top_subtype"] == max(subs, key=subs.get)
    assert math.isclose(float(row["prob_top_subtype"]), max(subs.values()), abs_tol=1e-5)


def test_a_labelled_slide_without_subtype_is_a_config_error(tiny_cohort: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with open(tiny_cohort, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[3]["subtype"] = ""
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(tiny_cohort.parent / r["path"]),
                          "annotations": str(tiny_cohort.parent / r["annotations"]),
                          "mask": str(tiny_cohort.parent / r["mask"])} for r in rows)
    code = main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), *FAST,
                 "--set", "target=subtype"])
    err = capsys.readouterr().err
    assert code == 2 and f"slide {rows[3]['slide_id']}" in err and "subtype" in err, err
    assert not (tmp_path / "r").exists()  # refused before anything was tiled or written
