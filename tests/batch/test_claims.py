"""Slide claims: exclusive, released, stale ones taken over; several processes share a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from histo_net.batch.claims import CLAIM_STALE_S, claim_path, read_claim, release_claim, try_claim
from histo_net.batch.state import host_name, install_dir

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_claim(out: Path, slide_id: str, host: str, pid: int) -> Path:
    path = claim_path(out, slide_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "started_at": "then"}))
    return path


def test_claim_is_exclusive_and_released(tmp_path: Path) -> None:
    assert try_claim(tmp_path, "a") is None
    owner = read_claim(claim_path(tmp_path, "a"))
    assert owner is not None and owner.pid == os.getpid() and owner.host == host_name()
    other = _write_claim(tmp_path, "b", host_name(), os.getppid())  # a live process
    assert try_claim(tmp_path, "b") is not None and other.exists()
    release_claim(tmp_path, "b")  # not ours: left alone
    assert other.exists()
    release_claim(tmp_path, "a")
    assert not claim_path(tmp_path, "a").exists()


def test_stale_claims_of_dead_writers_are_taken_over(tmp_path: Path) -> None:
    _write_claim(tmp_path, "dead", host_name(), _dead_pid())
    assert try_claim(tmp_path, "dead") is None
    assert read_claim(claim_path(tmp_path, "dead")).pid == os.getpid()
    fresh = _write_claim(tmp_path, "remote", "another-host", 1)
    assert try_claim(tmp_path, "remote") is not None  # heartbeat recent: alive elsewhere
    old = time.time() - CLAIM_STALE_S - 60
    os.utime(fresh, (old, old))
    assert try_claim(tmp_path, "remote") is None


def test_install_replaces_a_folder_whole(tmp_path: Path) -> None:
    for content in ("one", "two"):
        tmp = tmp_path / f".tmp-s-{content}"
        tmp.mkdir()
        (tmp / "report.json").write_text(content)
        install_dir(tmp_path, tmp, "s")
    assert (tmp_path / "s" / "report.json").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".state", "s"]


WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from histo_net.batch.runner import SlideTask, run_batch
    from histo_net.predict.summary import SlideSummary

    out, log = Path(sys.argv[1]), Path(sys.argv[2])
    tasks = [SlideTask(f"s{i:02d}", out / f"s{i:02d}.svs", None, {"k": 1}) for i in range(8)]

    def process(task, tmp_dir):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {task.slide_id}\\n")
        time.sleep(0.6)
        (tmp_dir / "report.json").write_text("{}")
        return SlideSummary("a", "ok", {"a": 1.0}, 1)

    summary = run_batch(tasks, process, out_dir=out, progress=False)
    print(json.dumps({"done": summary.done, "skipped": summary.skipped,
                      "elsewhere": summary.elsewhere}))
""")


def test_two_processes_on_one_folder_compute_each_slide_once(tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "calls.log"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(out), str(log)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    calls = [line.split() for line in log.read_text().splitlines()]
    slides = [slide for _, slide in calls]
    assert sorted(slides) == [f"s{i:02d}" for i in range(8)]  # each slide computed once
    assert len({pid for pid, _ in calls}) == 2  # and the work was shared
    done = sorted(results[0]["done"] + results[1]["done"])
    assert done == sorted(slides)
    assert not list((out / ".state").glob("*.claim"))
