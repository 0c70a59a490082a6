"""The trained tiny run shared by the end-to-end training tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_net.cli.main import main

FAST_SETTINGS = ["--set", "tiling.tile_size_px=64", "--set", "tile_cnn.epochs=2",
                 "--set", "tile_cnn.max_tiles_per_slide=64", "--set", "tile_cnn.val_max_tiles_per_slide=32",
                 "--set", "tile_cnn.batch_size=32", "--set", "mil.epochs=10",
                 "--set", "evaluation.bootstrap_samples=100"]
FAST = [*FAST_SETTINGS, "--workers", "1", "--no-progress"]


@pytest.fixture(scope="session")
def trained_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN of ``histo-net train`` on the tiny cohort with :data:`FAST` settings (do not modify)."""
    run = tmp_path_factory.mktemp("run") / "RUN"
    assert main(["train", "--manifest", str(tiny_cohort), "--out", str(run), *FAST]) == 0
    return run
