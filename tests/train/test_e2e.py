"""End-to-end training on the tiny synthetic cohort: CLI, bundle, metrics, skip, evaluate, resume."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from histo_net.cli.main import main
from tests.train.conftest import FAST

HEADLINE = ("slide_auroc", "balanced_accuracy", "ece_before_scaling", "ece_after_scaling",
            "tile_auroc", "attention_localisation_auroc", "temperature", "threshold")


def test_train_writes_loadable_bundle_and_finite_metrics(trained_run: Path) -> None:
    from histo_net.models.bundle import load_bundle

    for name in ("config.yaml", "version", "splits.csv", "metrics.json", "report.md", "roc.png",
                 "reliability.png", "model.pt", "model_card.md", "logs/tile_cnn.csv"):
        assert (trained_run / name).is_file(), name
    raw = torch.load(trained_run / "model.pt", weights_only=True)
    assert raw["class_names"] == ["neuroendocrine", "other_small_round_cell"]
    bundle = load_bundle(trained_run / "model.pt")
    assert bundle.tile_class_names[0] == "non_tumour" and bundle.tile_size_px == 64
    assert bundle.qc_reference is not None and bundle.qc_reference.feature_names
    encoder, mil = bundle.build_encoder(), bundle.build_mil()
    with torch.no_grad():
        feats = encoder.forward_features(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
        logits = mil(feats[None], torch.ones(1, 2, dtype=torch.bool))
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in HEADLINE:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["n_slides"] >= 2 and len(metrics["confusion_matrix"]) == 2
    with open(trained_run / "logs" / "tile_cnn.csv") as fh:
        losses = [float(r["train_loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


def test_no_patient_in_two_splits(trained_run: Path) -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    with open(trained_run / "splits.csv") as fh:
        for row in csv.DictReader(fh):
            seen[row["patient_id"]].add(row["split"])
    assert seen and all(len(v) == 1 for v in seen.values())
    assert set().union(*seen.values()) == {"train", "val", "test"}


def _stamps(run: Path) -> dict[str, int]:
    files = [run / "model.pt", run / "checkpoints" / "tile_cnn.pt", *sorted((run / "features").glob("*.h5")),
             *sorted((run / "tiles").glob("*.h5"))]
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in files}


def test_rerun_skips_finished_stages(trained_run: Path, tiny_cohort: Path) -> None:
    before = _stamps(trained_run)
    log_rows = (trained_run / "logs" / "tile_cnn.csv").read_text()
    assert main(["train", "--manifest", str(tiny_cohort), "--out", str(trained_run), *FAST]) == 0
    assert _stamps(trained_run) == before  # nothing was tiled, trained or embedded again
    assert (trained_run / "logs" / "tile_cnn.csv").read_text() == log_rows


def test_evaluate_on_a_held_out_cohort_shows_learning(trained_run: Path, tiny_heldout_cohort: Path,
                                                      tmp_path: Path) -> None:
    """The model learned: on slides of another seed it beats chance clearly (not only finite)."""
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(trained_run / "model.pt"), "--manifest",
                 str(tiny_heldout_cohort), "--out", str(out), "--workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_slides"] == 8
    # a 2-epoch model on 64 px tiles: "clearly above chance" (0.5), not a benchmark figure
    # (measured 2026-12-02: 0.85 / 0.85 / 1.00 on this cohort; the benchmark is in the README)
    assert metrics["tile_auroc_tumour_vs_non_tumour"] > 0.75, metrics
    assert metrics["tile_auroc_tumour_tiles_top_level"] > 0.7, metrics
    assert metrics["slide_auroc"] >= 0.75, metrics
    assert math.isfinite(metrics["attention_localisation_auroc"])
    assert (out / "roc.png").is_file() and (out / "report.md").is_file()


def test_bad_override_is_usage_error(tiny_cohort: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--manifest", str(tiny_cohort), "--out", str(tmp_path / "r"),
                 "--set", "tile_cnn.epochz=3"])
    assert code == 2 and "unknown key 'tile_cnn.epochz'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "histo_net", "train", *args]


@pytest.mark.slow
def test_kill_during_stage1_then_resume(trained_run: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    """Acceptance 3: SIGKILL after the first stage-1 checkpoint, --resume finishes in line."""
    run = tmp_path / "RUN"
    shutil.copytree(trained_run / "tiles", run / "tiles")  # reuse tiling, not the model
    args = ["--manifest", str(tiny_cohort), "--out", str(run), *FAST]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "tile_cnn_last.pt"
    deadline = time.time() + 120
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.pt").exists()
    done = subprocess.run(_cli(*args, "--resume"), env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    with open(run / "logs" / "tile_cnn.csv") as fh:
        assert [int(float(r["epoch"])) for r in csv.DictReader(fh)] == [0, 1]
    resumed = json.loads((run / "metrics.json").read_text())
    reference = json.loads((trained_run / "metrics.json").read_text())
    assert abs(resumed["tile_auroc"] - reference["tile_auroc"]) < 0.15
    assert math.isfinite(resumed["slide_auroc"])
