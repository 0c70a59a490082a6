"""Acceptance: a folder of hostile files gives one typed line per bad file, finishes the good
ones and exits 1; nothing hangs (the subprocess timeout is a hang guard, not a speed check)."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

from tests.hostile_corpus import build_hostile_corpus

REPO = Path(__file__).resolve().parents[2]


def test_hostile_corpus_typed_one_line_errors_and_good_slides_done(tmp_path: Path) -> None:
    entries = build_hostile_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "histo_net", "tile", str(tmp_path / "corpus"), "--out", str(out),
         "--no-progress", "--slide-timeout", "60"],
        capture_output=True, text=True, cwd=REPO, timeout=240, check=False)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = {line.split(": ")[1]: line for line in proc.stderr.splitlines()
             if line.startswith("histo-net tile: ") and ": failed [" in line}
    for entry in entries:
        if not entry.kinds:
            assert entry.slide_id not in lines, lines.get(entry.slide_id)
            assert (out / "tiles" / f"{entry.slide_id}.h5").is_file(), proc.stderr
            continue
        line = lines.get(entry.slide_id)
        assert line is not None, f"{entry.slide_id}: no failure line\n{proc.stderr}"
        kind = line.split("failed [", 1)[1].split("]", 1)[0]
        assert kind in entry.kinds, line
        assert entry.path.name in line, line  # names the file
    with open(out / "tiling.csv", newline="") as fh:
        rows = {row["slide_id"]: row for row in csv.DictReader(fh)}
    assert {e.slide_id for e in entries} == set(rows)
    assert sum(row["status"] == "done" for row in rows.values()) == 2
    print(f"hostile corpus: {len(entries)} entries in {elapsed:.1f} s")  # noted in the report
