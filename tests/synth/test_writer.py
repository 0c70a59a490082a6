"""Pyramidal slide writer: OpenSlide opens SVS and generic TIFF output with the right mpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histo_net.errors import ConfigError
from histo_net.synth.writer import write_pyramidal_slide

openslide = pytest.importorskip("openslide")


def _gradient(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height + 256, 0:width + 256]
    return np.stack([(xx // 3) % 256, (yy // 3) % 256, ((xx + yy) // 7) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt,vendor", [("svs", "aperio"), ("tiff", "generic-tiff")])
def test_writer_opens_with_mpp_and_levels(tmp_path: Path, fmt: str, vendor: str) -> None:
    width, height = 1800, 1300
    img = _gradient(width, height)
    path = tmp_path / f"s.{fmt}"
    write_pyramidal_slide(path, lambda tx, ty: img[ty * 256:(ty + 1) * 256, tx * 256:(tx + 1) * 256].copy(),
                          width=width, height=height, mpp=0.25, fmt=fmt, jpeg_quality=95)
    with openslide.OpenSlide(path) as slide:
        assert slide.properties["openslide.vendor"] == vendor
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25, rel=1e-3)
        assert slide.level_count >= 3
        assert slide.dimensions == (width, height)
        assert slide.level_dimensions[1] == (-(-width // 4), -(-height // 4))
        region = np.asarray(slide.read_region((700, 500), 0, (256, 200)).convert("RGB"), np.float64)
        assert np.abs(region - img[500:700, 700:956]).mean() < 4.0
        if fmt == "svs":
            assert "thumbnail" in slide.associated_images


def test_writer_streams_iterable_and_rejects_bad_tiles(tmp_path: Path) -> None:
    tiles = (np.full((256, 256, 3), 200, np.uint8) for _ in range(4))
    write_pyramidal_slide(tmp_path / "ok.svs", tiles, width=300, height=400, mpp=0.5)
    assert (tmp_path / "ok.svs").stat().st_size > 0
    with pytest.raises(ConfigError, match="shape"):
        write_pyramidal_slide(tmp_path / "bad.svs", [np.zeros((10, 10, 3), np.uint8)],
                              width=256, height=256, mpp=0.5)
    with pytest.raises(ConfigError, match="expected 1"):
        write_pyramidal_slide(tmp_path / "few.svs", [], width=256, height=256, mpp=0.5)
    assert not (tmp_path / "bad.svs").exists() and not (tmp_path / "few.svs").exists()
