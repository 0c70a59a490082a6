"""predict: model errors exit 2; DataLoader worker errors are typed one-liners naming the
file; the console table shows full ids, classes and the reason of failed rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_net.cli.main import main
from histo_net.errors import SlideReadError
from histo_net.features.embed import embed_slide, worker_message
from histo_net.models.tile_cnn import TileClassifier
from histo_net.wsi.slide import open_slide
from tests.predict_fixtures import make_untrained_bundle
from tests.slide_fixtures import flip_bytes_in_tiles, write_test_slide

REPO = Path(__file__).resolve().parents[2]


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histo_net", "predict", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)


def test_missing_or_unusable_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    slide, _ = write_test_slide(tmp_path / "s.tif", 256, 256)
    bad = tmp_path / "bad.pt"
    torch.save({"format_version": 1, "class_names": ["a"]}, bad)
    for model in (tmp_path / "nope.pt", bad):
        code = main(["predict", str(slide), "--model", str(model), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and model.name in err and len(err.splitlines()) == 1, err


def test_worker_errors_come_back_as_the_workers_one_line(tmp_path: Path) -> None:
    clean, _ = write_test_slide(tmp_path / "clean.tif", 1024, 1536, seed=2)
    broken = flip_bytes_in_tiles(clean, tmp_path / "broken.tif", page=0, fraction=0.5)
    encoder = TileClassifier(backbone="resnet18", num_classes=3)
    with open_slide(clean) as s:
        plan = s.read_plan(0.5, 64)
    coords = np.array([[x, 0] for x in range(0, 1536, 64)], np.int64)  # the damaged top row
    with pytest.raises(SlideReadError) as info:
        embed_slide(encoder, broken, coords, plan, device=torch.device("cpu"), batch_size=8,
                    workers=1)
    message = str(info.value)
    assert "\n" not in message and str(broken) in message and "Corrupt JPEG data" in message
    assert "DataLoader worker" not in message and "Traceback" not in message


def test_worker_message_unwraps_torch_traceback_text() -> None:
    text = ("Caught SlideReadError in DataLoader worker process 0.\nOriginal Traceback (most "
            "recent call last):\n  File \"x.py\", line 1, in f\nhisto_net.errors.SlideReadError: "
            "/data/a b.svs: cannot read the tile at (1, 2) (KeyError: 'x')\n")
    assert worker_message(SlideReadError(text)) == ("/data/a b.svs: cannot read the tile at "
                                                   "(1, 2) (KeyError: 'x')")
    assert worker_message(ValueError("plain")) == "plain"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_untrained_bundle(tmp_path_factory.mktemp("b") / "model.pt", tile_size_px=64,
                                 target_mpp=0.5)


@pytest.mark.slow
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
