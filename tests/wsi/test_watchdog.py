"""Per-slide watchdog: the child's tiling equals the in-process one; past the limit it stops."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from histo_net.config import TilingConfig
from histo_net.errors import MissingMPPError, SlideOpenError, SlideTimeoutError
from histo_net.wsi.watchdog import default_slide_timeout_s, tile_in_process, tile_with_limit
from tests.slide_fixtures import write_random_bytes, write_test_slide


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_slide(tmp_path_factory.mktemp("wd") / "s.tif", 1024, 1536)[0]


def test_child_result_equals_in_process(slide: Path) -> None:
    cfg = TilingConfig()
    child = tile_with_limit(slide, None, cfg, timeout_s=120)
    here = tile_in_process(slide, None, cfg)
    np.testing.assert_array_equal(child.result.coords, here.result.coords)
    np.testing.assert_array_equal(child.result.thumbnail, here.result.thumbnail)
    assert child.level_dimensions == ((1536, 1024), (768, 512), (384, 256))
    assert child.vendor == "generic-tiff"


def test_past_the_limit_the_slide_is_stopped_with_a_typed_error(slide: Path) -> None:
    start = time.monotonic()
    with pytest.raises(SlideTimeoutError, match="did not finish within 0 s") as info:
        tile_with_limit(slide, None, TilingConfig(), timeout_s=0.01)
    assert "s.tif" in str(info.value) and "\n" not in str(info.value)
    assert time.monotonic() - start < 30


def test_child_errors_come_back_typed(slide: Path, tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError, match="bad.svs"):
        tile_with_limit(write_random_bytes(tmp_path / "bad.svs"), None, TilingConfig())
    with pytest.raises(MissingMPPError, match="implausible"):
        tile_with_limit(slide, 50.0, TilingConfig())


def test_default_limit_scales_with_declared_size() -> None:
    assert default_slide_timeout_s(1000, 1000) == pytest.approx(120.06)
    assert default_slide_timeout_s(100_000, 80_000) == pytest.approx(120 + 60 * 8)
