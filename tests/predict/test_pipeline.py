"""End-to-end `histo-net predict` on real SVS files: failures stay local, resume, shards, kill -9, escaping."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from histo_net.cli.main import main
from tests.predict_fixtures import make_mixed_folder, make_untrained_bundle

PREDICT_FLAGS = ["--device", "cpu", "--workers", "0", "--batch-size", "32"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_untrained_bundle(tmp_path_factory.mktemp("bundle") / "model.pt")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, tiny_cohort: Path) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("mixed") / "slides"
    return folder, make_mixed_folder(folder, tiny_cohort)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, mixed, bundle: Path):
    """One uninterrupted run over the mixed folder: (out_dir, exit code, stderr text)."""
    folder, _ = mixed
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = subprocess.run([sys.executable, "-m", "histo_net", "predict", str(folder), "--model",
                           str(bundle), "--out", str(out), *PREDICT_FLAGS],
                          check=False, capture_output=True, text=True, timeout=600)
    return out, proc.returncode, proc.stderr


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        return {row["slide_id"]: row for row in csv.DictReader(fh)}


def _probabilities(out: Path) -> dict[str, tuple]:
    return {sid: tuple(sorted((k, round(float(v), 5)) for k, v in row.items()
                              if k.startswith("prob_") and v not in ("", None)))
            for sid, row in _rows(out).items() if row["status"] == "done"}


def test_mixed_folder_three_reports_four_failures(reference_run, mixed) -> None:
    out, code, stderr = reference_run
    _, ids = mixed
    assert code == 1, stderr
    assert "Traceback" not in stderr
    rows = _rows(out)
    assert sorted(rows) == sorted(ids["good"] + ids["bad"])
    for sid in ids["good"]:
        assert rows[sid]["status"] == "done"
        report = json.loads((out / sid / "report.json").read_text())
        assert report["predicted_class"] in ("neuroendocrine", "other_small_round_cell")
        assert (out / sid / "report.html").stat().st_size > 10_000
        geo = json.loads((out / sid / "tiles.geojson").read_text())
        tiles = [f for f in geo["features"] if f["properties"]["objectType"] == "tile"]
        assert len(tiles) == int(rows[sid]["tile_count"]) > 0
    for sid in ids["bad"]:
        assert rows[sid]["status"] == "failed" and rows[sid]["error"], rows[sid]
        assert not (out / sid / "report.json").exists()
    errors = {sid: rows[sid]["error"] for sid in ids["bad"]}
    assert "--mpp" in errors["no_mpp"]
    assert "tissue" in errors["blank"].lower()
    for sid in ids["bad"]:  # one line each, naming the file
        assert sid in errors[sid] and "\n" not in errors[sid]
        assert sum(sid in line for line in stderr.splitlines()) >= 1
    states = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {s["slide_id"]: s["status"] for s in states} == {r: rows[r]["status"] for r in rows}


def test_rerun_does_no_work_on_finished_slides(reference_run, mixed, bundle, tmp_path) -> None:
    from histo_net.predict.pipeline import PredictConfig
    from histo_net.predict.run import run_predict

    out, _, _ = reference_run
    folder, ids = mixed
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = {sid: (copy / sid / "report.json").stat().st_mtime_ns for sid in ids["good"]}
    summary = run_predict([folder], model_path=bundle, out_dir=copy,
                          cfg=PredictConfig(batch_size=32, workers=0), device_name="cpu", progress=False)
    assert sorted(summary.skipped) == sorted(ids["good"])
    assert summary.done == []
    assert sorted(f[0] for f in summary.failed) == sorted(ids["bad"])  # failed ones are retried
    assert before == {sid: (copy / sid / "report.json").stat().st_mtime_ns for sid in ids["good"]}


def test_shards_combine_to_the_unsharded_result(reference_run, mixed, bundle, tmp_path) -> None:
    out, _, _ = reference_run
    folder, _ = mixed
    sharded = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        code = main(["predict", str(folder), "--model", str(bundle), "--out", str(sharded),
                     "--shard", shard, *PREDICT_FLAGS])
        assert code in (0, 1)
    assert _probabilities(sharded) == _probabilities(out)
    assert set(_rows(sharded)) == set(_rows(out))


@pytest.mark.slow  # about 45 s; the runner-level kill test (tests/batch) stays in the default set
def test_sigkill_midway_then_rerun_matches(reference_run, mixed, bundle, tmp_path) -> None:
    out, _, _ = reference_run
    folder, _ = mixed
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "histo_net", "predict", str(folder), "--model", str(bundle),
           "--out", str(killed), *PREDICT_FLAGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    state_dir = killed / ".state"
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in state_dir.glob("*.json") if '"done"' in p.read_text(errors="ignore")] \
            if state_dir.exists() else []
        if done:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1, rerun.stderr
    assert _probabilities(killed) == _probabilities(out)
    leftovers = [p for p in killed.rglob("*") if p.name.startswith(".tmp") or p.suffix == ".tmp"]
    assert leftovers == []


def test_hostile_file_names_stay_inside_and_escaped(tiny_cohort, bundle, tmp_path) -> None:
    from histo_net.wsi.inputs import read_manifest

    src = read_manifest(tiny_cohort)[0].path
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(src, folder / "<script>alert(1)<script>.svs")
    shutil.copy(src, folder / "..svs")
    out = tmp_path / "out"
    code = main(["predict", str(folder), "--model", str(bundle), "--out", str(out), *PREDICT_FLAGS])
    assert code == 0
    written = [p for p in tmp_path.rglob("report.html")]
    assert len(written) == 2
    for html_path in written:
        assert out.resolve() in html_path.resolve().parents
        html = html_path.read_text(encoding="utf-8")
        assert "<script>alert" not in html
        assert "<script" not in html.lower()
    assert any("&lt;script&gt;" in p.read_text(encoding="utf-8") for p in written)
