"""predict: model errors exit 2; DataLoader worker errors are typed one-liners naming the
file; the console table shows full ids, classes and the reason of failed rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.predict_fixtures import make_untrained_bundle
from tests.slide_fixtures import flip_bytes_in_tiles, write_test_slide

REPO = Path(__file__).resolve().parents[2]


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histo_net", "predict", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)


def test_missing_or_unusable_model_exits_2(tmp_path: Path) -> None:
    slide, _ = write_test_slide(tmp_path / "s.tif", 256, 256)
    proc = _predict(str(slide), "--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "nope.pt" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.pt"
    torch.save({"format_version": 1, "class_names": ["a"]}, bad)
    proc = _predict(str(slide), "--model", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "bad.pt" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_untrained_bundle(tmp_path_factory.mktemp("b") / "model.pt", tile_size_px=64,
                                 target_mpp=0.5)


def test_worker_read_error_is_a_one_line_typed_failure(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_test_slide(folder / "a_good_slide_with_a_rather_long_name_indeed.tif", 1024, 1536)
    clean, _ = write_test_slide(tmp_path / "clean.tif", 1536, 2560, seed=2)
    # level-0 tiles of the upper half damaged: open, probe and thumbnail (read from level 1)
    # are fine; the tiles are read in a DataLoader worker and fail there
    flip_bytes_in_tiles(clean, folder / "corrupt_level0.tif", page=0, fraction=0.5)
    proc = _predict(str(folder), "--model", str(bundle), "--out", str(tmp_path / "out"),
                    "--workers", "1")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("histo-net predict: ")]
    assert len(failed) == 1, proc.stderr
    line = failed[0]
    assert "[slide_read]" in line and str(folder / "corrupt_level0.tif") in line
    assert "Corrupt JPEG data" in line  # the worker's own one-line reason
    assert "DataLoader worker" not in line and len(line) < 400, line
    table = proc.stdout.splitlines()
    row = next(r for r in table if r.startswith("corrupt_level0"))
    assert "failed" in row and "[slide_read]" in row  # the reason is in the table
    assert any(r.startswith("a_good_slide_with_a_rather_long_name_indeed ") for r in table)
    assert any("other_small_round_cell" in r or "neuroendocrine" in r for r in table)
