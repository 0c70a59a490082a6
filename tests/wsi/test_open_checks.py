"""Refuse before reading, hard open limit, no plain-image fallback, mpp and size limits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from histo_net.config import TilingConfig, TissueConfig
from histo_net.errors import (
    MissingMPPError,
    NotAFileError,
    ResolutionMismatchError,
    SlideOpenError,
    SlideTimeoutError,
    SlideTooLargeError,
)
from histo_net.wsi import handles as handles_mod
from histo_net.wsi.file_checks import call_with_limit, check_slide_path
from histo_net.wsi.slide import open_slide
from histo_net.wsi.tiling import tile_slide
from histo_net.wsi.tissue import tissue_mask
from tests.slide_fixtures import (
    he_like_image,
    write_dicom_wsi,
    write_huge_declared_tiff,
    write_png,
    write_pyramidal_tiff,
    write_truncated_copy,
)


def _one_line(exc: BaseException, name: str) -> str:
    text = str(exc)
    assert "\n" not in text and name in text, text
    return text


def test_fifo_device_loop_broken_link_and_folder_say_what_they_are(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.svs"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.svs"
    loop.symlink_to("loop.svs")
    broken = tmp_path / "broken.svs"
    broken.symlink_to("nowhere.svs")
    folder = tmp_path / "folder.svs"
    folder.mkdir()
    cases = {fifo: "named pipe", Path("/dev/zero"): "character device", loop: "symbolic link loop",
             broken: "broken symbolic link", folder: "is a directory"}
    for path, words in cases.items():
        start = time.monotonic()
        with pytest.raises(NotAFileError) as info:
            open_slide(path)
        assert words in _one_line(info.value, path.name) and time.monotonic() - start < 5
    empty = tmp_path / "empty.svs"
    empty.touch()
    with pytest.raises(SlideOpenError, match="empty file"):
        open_slide(empty)


def test_dicom_file_and_folder_open_and_a_pipe_beside_it_is_refused(tmp_path: Path) -> None:
    rgb, _ = he_like_image(300, 400, seed=2)
    dcm = write_dicom_wsi(tmp_path / "slide" / "level0.dcm", rgb, tile_px=64, mpp=0.5)
    for path in (dcm, dcm.parent):
        with open_slide(path) as s:
            assert s.vendor == "dicom" and s.dimensions == (400, 300)
            assert s.mpp == pytest.approx(0.5)
            assert np.abs(s.read_region((0, 0), 0, (400, 300)).astype(int) - rgb).max() == 0
    os.mkfifo(dcm.parent / "pipe")
    start = time.monotonic()
    with pytest.raises(SlideOpenError, match="named pipe .*'pipe'.*DICOM") as info:
        open_slide(dcm.parent)
    _one_line(info.value, "level0.dcm")
    assert time.monotonic() - start < 5


def test_open_is_hard_limited_when_openslide_blocks(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSlide's DICOM folder scan really blocks on a FIFO; with the pre-check disabled the
    hard limit still returns (the stuck call is abandoned, then released by a writer)."""
    rgb, _ = he_like_image(128, 128, seed=2)
    dcm = write_dicom_wsi(tmp_path / "s" / "a.dcm", rgb, tile_px=64)
    fifo = tmp_path / "s" / "zz_pipe"
    os.mkfifo(fifo)
    monkeypatch.setattr(handles_mod, "check_dicom_folder", lambda _path: None)
    start = time.monotonic()
    with pytest.raises(SlideTimeoutError, match="did not finish within 1 s"):
        open_slide(dcm, open_timeout_s=1.0)
    assert time.monotonic() - start < 10
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # unblock the abandoned reader thread
    os.close(fd)


def test_call_with_limit_returns_values_and_errors() -> None:
    assert call_with_limit(lambda: 3, 1.0, "late") == 3
    with pytest.raises(ZeroDivisionError):
        call_with_limit(lambda: 1 / 0, 1.0, "late")
    closed: list[int] = []
    with pytest.raises(SlideTimeoutError, match="late"):
        call_with_limit(lambda: time.sleep(0.5) or 7, 0.05, "late", cleanup=closed.append)
    time.sleep(0.8)
    assert closed == [7]  # the abandoned call's result was cleaned up


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rgb, _ = he_like_image(1024, 1536, seed=4)
    return write_pyramidal_tiff(tmp_path_factory.mktemp("svs") / "s.svs", rgb, mpp=0.25,
                                aperio=True)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_svs_fails_instead_of_plain_image_fallback(svs: Path, tmp_path: Path,
                                                             fraction: float) -> None:
    cut = write_truncated_copy(svs, tmp_path / "cut.svs", fraction)
    with pytest.raises(SlideOpenError) as info:
        open_slide(cut, mpp_override=0.5)  # with --mpp the fallback used to "succeed"
    _one_line(info.value, "cut.svs")


def test_unusable_mpp_metadata_is_named(tmp_path: Path) -> None:
    rgb, _ = he_like_image(256, 256)
    for value, shown in ((float("nan"), "'nan'"), (-0.5, "'-0.5")):
        path = write_pyramidal_tiff(tmp_path / f"m{value}.svs", rgb, mpp=value, aperio=True,
                                    n_levels=1)
        with pytest.raises(MissingMPPError, match="not a positive number") as info:
            open_slide(path)
        assert shown in _one_line(info.value, path.name) and "--mpp" in str(info.value)


def test_upsampling_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    rgb, _ = he_like_image(512, 512)
    path = write_pyramidal_tiff(tmp_path / "coarse.tif", rgb, mpp=16.8, n_levels=1)
    with open_slide(path) as s:
        with pytest.raises(ResolutionMismatchError, match="--mpp") as info:
            s.read_plan(0.5, 224, max_upsample=2.0)
        assert "33.6x coarser" in _one_line(info.value, "coarse.tif")
        assert s.read_plan(0.5, 224, max_upsample=40.0).level == 0
    with open_slide(path, mpp_override=1.0) as s:  # within 2x: accepted
        assert s.read_plan(0.5, 224, max_upsample=2.0).read_size_px == 112


def test_huge_declared_level_is_refused_before_reading(tmp_path: Path) -> None:
    path = write_huge_declared_tiff(tmp_path / "huge.tif")
    assert path.stat().st_size < 6_000_000
    start = time.monotonic()
    with open_slide(path) as s:
        assert s.dimensions == (200_000, 200_000)
        with pytest.raises(SlideTooLargeError, match="over the budget") as info:
            tile_slide(s, TilingConfig())
    _one_line(info.value, "huge.tif")
    assert time.monotonic() - start < 10


def test_check_slide_path_gives_the_dicom_instance_of_a_folder(tmp_path: Path) -> None:
    rgb, _ = he_like_image(64, 64)
    b = write_dicom_wsi(tmp_path / "d" / "b.dcm", rgb, tile_px=64)
    write_dicom_wsi(tmp_path / "d" / "c.dcm", rgb, tile_px=64, instance_uid="1.2.3.4")
    assert check_slide_path(tmp_path / "d") == b


def test_small_all_tissue_image_keeps_its_tissue(tmp_path: Path) -> None:
    rgb, _ = he_like_image(256, 256, seed=3, ellipses=((0.5, 0.5, 0.9, 0.9),))
    # 128 x 128 um of tissue: smaller than the 20,000 um2 minimum object, kept all the same
    assert tissue_mask(rgb, 0.5, TissueConfig()).mean() > 0.5
    png = write_png(tmp_path / "crop.png", rgb)
    with open_slide(png, mpp_override=0.5) as s:
        result = tile_slide(s, TilingConfig(tile_size_px=112))
    assert len(result.coords) >= 1
