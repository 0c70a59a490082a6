"""Batch runner: failure isolation, resume, sharding, kill safety, run files."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from histo_net.batch.runner import BatchSummary, SlideTask, run_batch
from histo_net.batch.state import (
    STATE_DIR,
    clean_stale,
    input_sha256,
    load_hash_cache,
    read_state,
    rebuild_run_files,
)
from histo_net.distributed import parse_shard, select_shard, shard_from_env
from histo_net.errors import ConfigError, SlideOpenError
from histo_net.io_utils import sanitize_slide_id
from histo_net.predict.summary import SlideSummary, prediction_run_files

CLASSES = ["neuroendocrine", "other_srct"]
ROOT = Path(__file__).resolve().parents[2]


def fake_probability(slide_id: str) -> float:
    """Deterministic per-slide 'prediction' so separate runs can be compared."""
    return (sum(map(ord, slide_id)) % 97) / 97.0


RUN_FILES = prediction_run_files(CLASSES)


def good_process(task: SlideTask, tmp_dir: Path) -> SlideSummary:
    """Writes a report folder and returns a summary, like the real pipeline."""
    p = fake_probability(task.slide_id)
    (tmp_dir / "report.json").write_text(json.dumps({"slide_id": task.slide_id, "p": p}))
    (tmp_dir / "report.html").write_text("<html></html>")
    return SlideSummary(predicted_class=CLASSES[0] if p >= 0.5 else CLASSES[1],
                        status="indeterminate" if 0.35 < p < 0.65 else "ok",
                        probabilities={CLASSES[0]: p, CLASSES[1]: 1 - p},
                        tile_count=len(task.slide_id))


def make_tasks(folder: Path, n: int, key: str = "k1") -> list[SlideTask]:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for i in range(n):
        path = folder / f"slide_{i:02d}.svs"
        path.write_bytes(f"slide {i}".encode())
        tasks.append(SlideTask(slide_id=path.stem, path=path, label=CLASSES[i % 2],
                               input_key={"input_sha256": f"sha{i}", "bundle_sha256": key}))
    return tasks


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def leftovers(out: Path) -> list[str]:
    """Temp folders / temp files that must not survive a finished run."""
    return sorted(p.name for p in out.rglob("*") if p.name.startswith((".tmp-", ".old-"))
                  or p.name.endswith(".tmp"))


def test_failures_are_isolated_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tasks = make_tasks(tmp_path / "in", 5)

    def process(task: SlideTask, tmp_dir: Path) -> SlideSummary:
        if task.slide_id == "slide_01":
            (tmp_dir / "report.json").write_text("partial")
            raise SlideOpenError(f"{task.path}: not a slide (truncated TIFF)")
        if task.slide_id == "slide_03":
            raise ValueError("boom\nsecond line of a traceback-ish message")
        return good_process(task, tmp_dir)

    out = tmp_path / "out"
    summary = run_batch(tasks, process, out_dir=out, progress=False, run_files=RUN_FILES)
    assert sorted(summary.done) == ["slide_00", "slide_02", "slide_04"]
    assert summary.exit_code() == 1 and BatchSummary().exit_code() == 0
    failed = {sid: (kind, msg) for sid, kind, msg in summary.failed}
    assert failed["slide_01"][0] == "slide_open" and "slide_01.svs" in failed["slide_01"][1]
    assert failed["slide_03"][0] == "ValueError" and "slide_03.svs" in failed["slide_03"][1]
    assert all("\n" not in msg for _, msg in failed.values())
    err_lines = [line for line in capsys.readouterr().err.splitlines() if "failed" in line]
    assert len(err_lines) == 2
    assert not (out / "slide_01").exists() and not (out / "slide_03").exists()
    assert (out / "slide_00" / "report.json").is_file() and leftovers(out) == []
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["status"] for m in manifest] == ["done", "failed", "done", "failed", "done"]
    assert manifest[1]["error_type"] == "slide_open" and manifest[0]["input_sha256"] == "sha0"
    assert manifest[0]["bundle_sha256"] == "k1" and manifest[0]["finished_at"]
    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == ["slide_id", "path", "status", "label", "outcome", "predicted_class",
                             "prob_neuroendocrine", "prob_other_srct", "indeterminate", "reason",
                             "tile_count", "error"]
    assert rows[1]["status"] == "failed" and rows[1]["error"] and rows[1]["prob_neuroendocrine"] == ""
    assert float(rows[2]["prob_neuroendocrine"]) == pytest.approx(fake_probability("slide_02"), abs=1e-6)
    assert rows[0]["label"] == "neuroendocrine" and rows[0]["tile_count"] == "8"


def test_rerun_skips_done_retries_failed_and_redoes_changed(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "in", 4)
    calls: list[str] = []
    broken = {"slide_02"}

    def process(task: SlideTask, tmp_dir: Path) -> SlideSummary:
        calls.append(task.slide_id)
        if task.slide_id in broken:
            raise SlideOpenError(f"{task.path}: corrupt")
        return good_process(task, tmp_dir)

    out = tmp_path / "out"
    assert run_batch(tasks, process, out_dir=out, progress=False, run_files=RUN_FILES).exit_code() == 1
    calls.clear()
    broken.clear()
    second = run_batch(tasks, process, out_dir=out, progress=False, run_files=RUN_FILES)
    assert calls == ["slide_02"] and second.exit_code() == 0
    assert sorted(second.skipped) == ["slide_00", "slide_01", "slide_03"]
    calls.clear()
    changed = make_tasks(tmp_path / "in", 4)
    changed[1].input_key["bundle_sha256"] = "k2"  # a new model for one slide -> redo it
    run_batch(changed, process, out_dir=out, progress=False, run_files=RUN_FILES)
    assert calls == ["slide_01"]
    calls.clear()
    (out / "slide_03" / "report.json").unlink()  # a damaged output folder is redone
    run_batch(changed, process, out_dir=out, progress=False, overwrite=False, run_files=RUN_FILES)
    assert calls == ["slide_03"]
    calls.clear()
    run_batch(changed, process, out_dir=out, progress=False, overwrite=True, run_files=RUN_FILES)
    assert sorted(calls) == [t.slide_id for t in tasks] and leftovers(out) == []


def test_select_and_parse_shard() -> None:
    items = [f"s{i}" for i in range(11)]
    shards = [select_shard(items, i, 3, key=str) for i in range(3)]
    assert sorted(x for shard in shards for x in shard) == sorted(items)
    assert all(not set(a) & set(b) for a in shards for b in shards if a is not b)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    assert select_shard(shuffled, 1, 3, key=str) == shards[1]
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0", ""):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    assert shard_from_env({}) is None


def test_shards_combine_into_the_unsharded_result(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "in", 7)
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    run_batch(tasks, good_process, out_dir=whole, progress=False, run_files=RUN_FILES)
    for index in (0, 1):
        part = select_shard(tasks, index, 2, key=lambda t: t.slide_id)
        run_batch(part, good_process, out_dir=sharded, progress=False, run_files=RUN_FILES)
    assert (sharded / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()
    assert len(read_csv(sharded / "predictions.csv")) == 7


KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from histo_net.batch.runner import SlideTask, run_batch
    from tests.batch.test_runner import RUN_FILES, good_process
    out, victim, overwrite = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    tasks = [SlideTask(**{**t, "path": Path(t["path"])}) for t in json.loads(sys.argv[4])]
    def process(task, tmp_dir):
        if task.slide_id == victim:
            (tmp_dir / "report.json").write_text(json.dumps({"slide_id": task.slide_id}))
            (tmp_dir / "report.html").write_text("<html><body>half a rep")
            os.kill(os.getpid(), signal.SIGKILL)
        return good_process(task, tmp_dir)
    run_batch(tasks, process, out_dir=out, progress=False, overwrite=overwrite, run_files=RUN_FILES)
""")


def run_killed(out: Path, tasks: list[SlideTask], victim: str, overwrite: bool) -> None:
    payload = json.dumps([{"slide_id": t.slide_id, "path": str(t.path), "label": t.label,
                           "input_key": t.input_key} for t in tasks])
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), victim,
                           "1" if overwrite else "0", payload],
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_sigkill_mid_slide_never_counts_as_done(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "in", 4)
    out = tmp_path / "out"
    run_killed(out, tasks, victim="slide_02", overwrite=False)
    assert read_state(out, "slide_01").status == "done"
    assert read_state(out, "slide_02").status == "running"
    assert not (out / "slide_02").exists() and not (out / "slide_03").exists()
    assert any(name.startswith(".tmp-slide_02-") for name in leftovers(out))

    summary = run_batch(tasks, good_process, out_dir=out, progress=False, run_files=RUN_FILES)
    assert sorted(summary.skipped) == ["slide_00", "slide_01"]
    assert sorted(summary.done) == ["slide_02", "slide_03"] and leftovers(out) == []
    assert json.loads((out / "slide_02" / "report.json").read_text())["slide_id"] == "slide_02"

    # killed while overwriting a finished slide: it must be redone, not skipped
    run_killed(out, tasks, victim="slide_00", overwrite=True)
    assert read_state(out, "slide_00").status == "running"
    redo = run_batch(tasks, good_process, out_dir=out, progress=False, run_files=RUN_FILES)
    assert redo.done == ["slide_00"] and leftovers(out) == []

    reference = tmp_path / "reference"
    run_batch(tasks, good_process, out_dir=reference, progress=False, run_files=RUN_FILES)
    rows, ref_rows = read_csv(out / "predictions.csv"), read_csv(reference / "predictions.csv")
    assert rows == ref_rows and len(rows) == 4


def test_stale_dirs_of_live_processes_are_kept(tmp_path: Path) -> None:
    import socket

    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = sanitize_slide_id(socket.gethostname())
        live = out / f".tmp-a-{sleeper.pid}@{host}"
        other_host = out / ".tmp-b-1@some-other-node"
        live.mkdir()
        other_host.mkdir()
        assert clean_stale(out) == [] and live.is_dir() and other_host.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert clean_stale(out) == [live] and not live.exists() and other_host.is_dir()


def test_unsafe_and_duplicate_ids_are_rejected_and_names_stay_inside(tmp_path: Path) -> None:
    path = tmp_path / "../<script>x.svs"
    with pytest.raises(ConfigError, match="not a safe file name"):
        run_batch([SlideTask("../<script>x", path)], good_process, out_dir=tmp_path / "o", progress=False, run_files=RUN_FILES)
    dup = [SlideTask("a", tmp_path / "a.svs"), SlideTask("a", tmp_path / "sub" / "a.svs")]
    with pytest.raises(ConfigError, match="also used"):
        run_batch(dup, good_process, out_dir=tmp_path / "o", progress=False, run_files=RUN_FILES)
    safe_id = sanitize_slide_id("..<script>alert(1)</script>..")
    out = tmp_path / "o"
    run_batch([SlideTask(safe_id, path)], good_process, out_dir=out, progress=False, run_files=RUN_FILES)
    written = [p for p in tmp_path.rglob("report.json")]
    assert written and all(out.resolve() in p.resolve().parents for p in written)


def test_input_sha256_cache(tmp_path: Path) -> None:
    slide = tmp_path / "s.svs"
    slide.write_bytes(b"abc")
    cache: dict = {}
    digest = input_sha256(slide, cache)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    cache[str(slide.resolve())]["sha256"] = "cached"
    assert input_sha256(slide, cache) == "cached"  # unchanged file: not rehashed
    slide.write_bytes(b"abcd")
    os.utime(slide, ns=(1, 1))
    assert input_sha256(slide, cache) != "cached"
    out = tmp_path / "out"
    task = SlideTask("s", slide, None, {"input_sha256": input_sha256(slide)})
    run_batch([task], good_process, out_dir=out, progress=False, run_files=RUN_FILES)
    assert load_hash_cache(out)[str(slide.resolve())]["sha256"] == task.input_key["input_sha256"]


def test_rebuild_with_explicit_classes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(make_tasks(tmp_path / "in", 2), good_process, out_dir=out, progress=False, run_files=RUN_FILES)
    rebuild_run_files(out, prediction_run_files(["other_srct"]))
    assert "prob_other_srct" in read_csv(out / "predictions.csv")[0]
    assert "prob_neuroendocrine" not in read_csv(out / "predictions.csv")[0]
