"""A corpus of hostile and broken slide files, built in the test suite (nothing downloaded).

:func:`build_hostile_corpus` writes two good slides and one of each bad kind into a folder
and returns what every entry is expected to give: the batch must fail each bad one with a
typed one-line error naming it (the allowed error kinds are listed) and finish the good
ones. Every file is small; building the corpus takes about a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.slide_fixtures import (
    flip_bytes_in_tiles,
    he_like_image,
    make_folder_named,
    write_dicom_wsi,
    write_empty_file,
    write_garbage_ifd_copy,
    write_huge_declared_tiff,
    write_pyramidal_tiff,
    write_random_bytes,
    write_test_slide,
    write_truncated_copy,
)


@dataclass(frozen=True)
class HostileEntry:
    """One corpus entry: its slide id, the path given to the batch, the allowed error kinds."""

    slide_id: str
    path: Path
    kinds: frozenset[str]  # empty: a good slide that must succeed


def build_hostile_corpus(folder: Path) -> list[HostileEntry]:
    """Write the corpus into ``folder`` (listed non-recursively by the batch) and describe it."""
    folder.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f"{folder.name}_sources"
    work.mkdir(exist_ok=True)
    rgb, _ = he_like_image(1024, 1536, seed=4)
    svs = write_pyramidal_tiff(folder / "good_svs.svs", rgb, mpp=0.25, aperio=True)
    single = write_pyramidal_tiff(work / "single.tif", rgb, mpp=0.5, n_levels=1)
    entries = [
        HostileEntry("good_tiff", write_test_slide(folder / "good_tiff.tif", 1024, 1536)[0],
                     frozenset()),
        HostileEntry("good_svs", svs, frozenset()),
    ]
    opened = frozenset({"slide_open"})
    bad = {
        "empty": (write_empty_file(folder / "empty.svs"), opened),
        "random_bytes": (write_random_bytes(folder / "random_bytes.svs", 50_000), opened),
        "garbage_ifd": (write_garbage_ifd_copy(single, folder / "garbage_ifd.tif"), opened),
        "flipped_jpeg": (flip_bytes_in_tiles(single, folder / "flipped_jpeg.tif"),
                         frozenset({"slide_open", "slide_read"})),
        "huge_declared": (write_huge_declared_tiff(folder / "huge_declared.tif"),
                          frozenset({"slide_too_large"})),
    }
    for pct in (10, 50, 90):
        path = write_truncated_copy(svs, folder / f"truncated_{pct}.svs", pct / 100)
        bad[f"truncated_{pct}"] = (path, frozenset({"slide_open", "slide_read"}))
    fifo = folder / "named_pipe.svs"
    os.mkfifo(fifo)
    loop = folder / "loop.svs"
    loop.symlink_to(loop.name)
    bad["named_pipe"] = (fifo, frozenset({"not_a_file"}))
    bad["loop"] = (loop, frozenset({"not_a_file"}))
    bad["folder"] = (make_folder_named(folder / "folder.svs"), frozenset({"not_a_file"}))
    dicom = folder / "dicom_with_pipe"
    write_dicom_wsi(dicom / "level0.dcm", rgb[:512, :768])
    os.mkfifo(dicom / "pipe")
    bad["dicom_with_pipe"] = (dicom, opened)
    entries += [HostileEntry(slide_id, path, kinds) for slide_id, (path, kinds) in bad.items()]
    return entries
