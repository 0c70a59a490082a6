"""Helpers for prediction tests: an untrained (random-weight) bundle and a mixed slide folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from histo_net.models.untrained import save_untrained_bundle


def make_untrained_bundle(path: Path, *, tile_size_px: int = 64, target_mpp: float = 1.0) -> Path:
    """A random-weight bundle with small tiles so tests stay fast."""
    return save_untrained_bundle(path, tile_size_px=tile_size_px, target_mpp=target_mpp)


def make_mixed_folder(folder: Path, cohort_manifest: Path) -> dict[str, list[str]]:
    """3 good SVS slides, 2 corrupt files, 1 blank slide, 1 slide without mpp (a PNG crop).

    Returns {"good": [...ids], "bad": [...ids]} using the sanitised file stems.
    """
    from PIL import Image

    from histo_net.synth.writer import write_pyramidal_slide
    from histo_net.wsi.inputs import read_manifest
    from histo_net.wsi.slide import open_slide

    folder.mkdir(parents=True, exist_ok=True)
    specs = read_manifest(cohort_manifest)
    good = []
    for spec in specs[:3]:
        shutil.copy(spec.path, folder / spec.path.name)
        good.append(spec.path.stem)
    (folder / "random_bytes.svs").write_bytes(np.random.default_rng(0).bytes(50_000))
    data = specs[0].path.read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) // 2])
    white = np.full((256, 256, 3), 255, np.uint8)
    write_pyramidal_slide(folder / "blank.svs", lambda _x, _y: white, width=2048, height=2048,
                          mpp=0.25, tile_px=256, fmt="svs")
    with open_slide(specs[1].path) as slide:
        w, h = slide.dimensions
        crop = slide.read_region((w // 4, h // 4), 0, (w // 2, h // 2))
    Image.fromarray(crop).save(folder / "no_mpp.png")
    return {"good": good, "bad": ["random_bytes", "truncated", "blank", "no_mpp"]}
