"""End-to-end tests of ``histo-net tile``: batch isolation, skip/overwrite, mpp, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from histo_net.cli.main import main
from histo_net.config import TilingConfig, load_config
from histo_net.wsi.tiles_file import read_tiles_h5
from tests.slide_fixtures import (
    write_empty_file,
    write_random_bytes,
    write_test_slide,
    write_truncated_copy,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = write_test_slide(tmp_path_factory.mktemp("cli") / "good.tif", height=1024,
                               width=1536, mpp=0.5)
    return path


def test_folder_with_corrupt_files_subprocess(good_slide: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.tif").write_bytes(good_slide.read_bytes())
    write_empty_file(folder / "empty.svs")
    write_random_bytes(folder / "random.svs")
    write_truncated_copy(good_slide, folder / "cut.tif")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "histo_net", "tile", str(folder), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("histo-net tile: ")]
    assert len(failed) == 3, proc.stderr
    for name in ("empty.svs", "random.svs", "cut.tif"):
        assert sum(name in line for line in failed) == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    other = [ln for ln in proc.stderr.splitlines() if ln.strip() and ln not in failed]
    assert len(other) == 1 and other[0].startswith("tiled 1/4"), proc.stderr  # no warnings
    assert "good: " in proc.stdout and "tiles, tissue" in proc.stdout and "tiff-resolution" in proc.stdout
    tiles = read_tiles_h5(out / "tiles" / "good.h5")
    assert tiles.n_tiles > 0 and tiles.mpp_source == "tiff-resolution"
    assert (out / "tiles" / "good_qc.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "tiles").iterdir()) == ["good.h5", "good_qc.png"]
    rows = (out / "tiling.csv").read_text().splitlines()
    assert len(rows) == 5 and sum(",failed," in r for r in rows) == 3


def test_skip_then_overwrite_and_options(good_slide: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["tile", str(good_slide), "--out", str(out), "--tile-size", "128", "--no-qc"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "good: " in first and "skipped" not in first
    h5 = out / "tiles" / "good.h5"
    assert read_tiles_h5(h5).plan.tile_size_px == 128 and not (out / "tiles" / "good_qc.png").exists()
    mtime = h5.stat().st_mtime_ns
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out and h5.stat().st_mtime_ns == mtime
    assert main(args + ["--overwrite"]) == 0
    assert "skipped" not in capsys.readouterr().out and h5.stat().st_mtime_ns != mtime
    # changed settings re-tile without --overwrite
    assert main(args + ["--target-mpp", "1.0", "--set", "min_tissue_fraction=0.7"]) == 0
    assert "skipped" not in capsys.readouterr().out
    tiles = read_tiles_h5(h5)
    assert tiles.plan.target_mpp == 1.0 and tiles.plan.level == 1
    assert TilingConfig.model_validate_json(tiles.tiling_config_json).min_tissue_fraction == 0.7


def test_slide_without_mpp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = write_test_slide(tmp_path / "nompp.tif", height=768, width=768, mpp=None)
    out = tmp_path / "out"
    assert main(["tile", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nompp.tif" in err and "--mpp" in err and "Traceback" not in err
    assert main(["tile", str(path), "--out", str(out), "--mpp", "0.5"]) == 0
    tiles = read_tiles_h5(out / "tiles" / "nompp.h5")
    assert tiles.mpp_source == "override" and tiles.slide_mpp == 0.5


def test_usage_and_config_errors(good_slide: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert main(["tile", str(good_slide), "--out", out, "--set", "tile_sise_px=3"]) == 2
    assert "tile_sise_px" in capsys.readouterr().err
    assert main(["tile", str(good_slide), "--out", out, "--config", str(tmp_path / "no.yaml")]) == 2
    assert main(["tile", str(tmp_path / "empty_dir_missing.csv"), "--out", out]) == 2
    config = REPO / "configs" / "tiling.yaml"
    assert load_config(TilingConfig, config) == TilingConfig()  # the shipped file = defaults
    assert main(["tile", str(good_slide), "--out", out, "--config", str(config)]) == 0
    with pytest.raises(SystemExit) as info:
        main(["tile", str(good_slide), "--out", out, "--tile-size", "-4"])
    assert info.value.code == 2


def test_missing_path_and_folder_named_svs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.svs").mkdir()
    code = main(["tile", str(tmp_path / "x.svs"), str(tmp_path / "nope.svs"), "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "is a directory" in err and "file not found" in err and "Traceback" not in err
