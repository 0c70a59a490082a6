"""Every manifest problem is reported together in ONE ConfigError, before any tile is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_net.errors import ConfigError
from histo_net.train.manifest import validate_manifest

CLASSES = ["neuroendocrine", "other_small_round_cell"]
HEADER = "slide_id,patient_id,path,label\n"


def _files(tmp_path: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        p = tmp_path / f"s{i}.svs"
        p.write_bytes(b"x")
        names.append(p.name)
    return names


def test_good_manifest(tmp_path: Path) -> None:
    f = _files(tmp_path, 3)
    (tmp_path / "m.csv").write_text(HEADER + f"a,p1,{f[0]},neuroendocrine\nb,p1,{f[1]},neuroendocrine\n"
                                    f"c,p2,{f[2]},other_small_round_cell\n")
    m = validate_manifest(tmp_path / "m.csv", CLASSES)
    assert [s.slide_id for s in m.slides] == ["a", "b", "c"]
    assert m.slides[0].path == (tmp_path / f[0]).resolve()
    assert m.class_names == tuple(CLASSES) and not m.has_annotations


def test_all_problems_in_one_error(tmp_path: Path) -> None:
    f = _files(tmp_path, 4)
    (tmp_path / "m.csv").write_text(
        HEADER
        + f"a,p1,{f[0]},neuroendocrine\n"
        + f"a,p9,{f[1]},neuroendocrine\n"          # duplicate slide id
        + "b,p2,missing.svs,neuroendocrine\n"      # missing file
        + f"c,p3,{f[2]},lymphoma\n"                # unknown label
        + f"d,p1,{f[3]},other_small_round_cell\n"  # patient p1 with two labels
    )
    with pytest.raises(ConfigError) as info:
        validate_manifest(tmp_path / "m.csv", CLASSES)
    msg = str(info.value)
    assert "\n" not in msg and "m.csv" in msg and "4 manifest problem" in msg
    for needle in ("duplicate slide id 'a'", "missing.svs", "unknown label 'lymphoma'",
                   "patient 'p1'"):
        assert needle in msg, needle


@pytest.mark.parametrize("rows, needle", [
    ("a,p1,{0},neuroendocrine\nb,p2,{1},neuroendocrine\n", "only one class"),
    ("a,p1,{0},neuroendocrine\na,p2,{1},other_small_round_cell\n", "duplicate slide id"),
    ("a,p1,nope.svs,neuroendocrine\nb,p2,{1},other_small_round_cell\n", "not found"),
    ("a,p1,{0},neuroendocrin\nb,p2,{1},other_small_round_cell\n", "unknown label"),
    ("a,p1,{0},neuroendocrine\nb,p1,{1},other_small_round_cell\n", "different labels"),
])
def test_each_problem(tmp_path: Path, rows: str, needle: str) -> None:
    f = _files(tmp_path, 2)
    (tmp_path / "m.csv").write_text(HEADER + rows.format(*f))
    with pytest.raises(ConfigError, match=needle):
        validate_manifest(tmp_path / "m.csv", CLASSES)


def test_missing_column_and_file(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("slide_id,path\na,b\n")
    with pytest.raises(ConfigError, match="lacks column"):
        validate_manifest(tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="not found"):
        validate_manifest(tmp_path / "none.csv")


def test_run_training_refuses_before_reading_tiles(tmp_path: Path) -> None:
    from histo_net.train.config import TrainConfig
    from histo_net.train.run import run_training

    f = _files(tmp_path, 2)
    (tmp_path / "m.csv").write_text(HEADER + f"a,p1,{f[0]},neuroendocrine\na,p2,{f[1]},lymphoma\n")
    with pytest.raises(ConfigError, match="2 manifest problem"):
        run_training(tmp_path / "m.csv", tmp_path / "RUN", TrainConfig(), device="cpu")
    assert not (tmp_path / "RUN").exists()
