"""Shared fixtures: the real-data folder and small synthetic inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def real_data_root() -> Path | None:
    """``$HISTO_NET_REAL_DATA`` or ``../shared/data/real`` when it exists, else None."""
    env = os.environ.get("HISTO_NET_REAL_DATA")
    root = Path(env) if env else REAL_DATA_DEFAULT
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real test-data folder; skips the test with a clear reason when absent."""
    root = real_data_root()
    if root is None:
        pytest.skip(f"real test data not found (set HISTO_NET_REAL_DATA or provide {REAL_DATA_DEFAULT})")
    return root


@pytest.fixture(scope="session")
def cmu_svs(real_data_dir: Path) -> Path:
    """The real Aperio slide CMU-1-Small-Region.svs."""
    path = real_data_dir / "wsi" / "CMU-1-Small-Region.svs"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest.csv of a tiny synthetic cohort (8 SVS slides, seed 1, ``easy`` difficulty so a
    briefly trained CNN learns it), built once per session."""
    from histo_net.synth import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    return generate_cohort(out, n_slides=8, seed=1, preset="tiny", difficulty="easy")


@pytest.fixture(scope="session")
def tiny_heldout_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest.csv of a second tiny cohort (8 slides, seed 2): held out from models trained on
    ``tiny_cohort``, so accuracy checks never score a model on its own training slides."""
    from histo_net.synth import generate_cohort

    out = tmp_path_factory.mktemp("tiny_heldout_cohort")
    return generate_cohort(out, n_slides=8, seed=2, preset="tiny", difficulty="easy")
