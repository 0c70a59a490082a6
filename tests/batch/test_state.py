"""Batch state files: typed records, tolerant reading, manifest rebuild, work-folder install."""

from __future__ import annotations

import json
from pathlib import Path

from histo_net.batch.state import (
    DONE,
    FAILED,
    STATE_DIR,
    SlideState,
    install_dir,
    manifest_record,
    read_state,
    read_states,
    rebuild_run_files,
    state_path,
    write_state,
)


def test_state_round_trip_is_strict_json(tmp_path: Path) -> None:
    state = SlideState("s1", "/x/s1.svs", DONE, label="neuroendocrine",
                       input_key={"input_sha256": "abc"}, seconds=float("nan"),
                       summary={"probabilities": {"a": 0.25}})
    write_state(tmp_path, state)
    text = state_path(tmp_path, "s1").read_text()
    assert "NaN" not in text and json.loads(text)["seconds"] is None
    back = read_state(tmp_path, "s1")
    assert back is not None and back.summary == {"probabilities": {"a": 0.25}}
    assert back.input_key == {"input_sha256": "abc"} and back.status == DONE


def test_unreadable_and_foreign_state_files(tmp_path: Path) -> None:
    folder = tmp_path / STATE_DIR
    folder.mkdir()
    (folder / "broken.json").write_text("{not json")
    (folder / "list.json").write_text("[1, 2]")
    (folder / "newer.json").write_text(json.dumps(
        {"slide_id": "newer", "path": "p", "status": FAILED, "field_from_the_future": 1}))
    assert read_state(tmp_path, "broken") is None and read_state(tmp_path, "missing") is None
    states = read_states(tmp_path)
    assert [s.slide_id for s in states] == ["newer"] and states[0].status == FAILED


def test_manifest_and_stage_run_files(tmp_path: Path) -> None:
    for sid, status in (("b", FAILED), ("a", DONE)):
        write_state(tmp_path, SlideState(sid, f"/{sid}.svs", status, input_key={"bundle_sha256": "k"},
                                         error="boom" if status == FAILED else None))
    rebuild_run_files(tmp_path, lambda states: {"extra.txt": ",".join(s.slide_id for s in states)})
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [x["slide_id"] for x in lines] == ["a", "b"] and lines[1]["error"] == "boom"
    assert lines[0] == manifest_record(read_state(tmp_path, "a"))
    assert (tmp_path / "extra.txt").read_text() == "a,b"


def test_install_replaces_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "old.txt").write_text("old")
    work = tmp_path / ".tmp-s1-1@h"
    work.mkdir()
    (work / "report.json").write_text("{}")
    final = install_dir(tmp_path, work, "s1")
    assert sorted(p.name for p in final.iterdir()) == ["report.json"] and not work.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".old-")] == []
