"""The tile-coordinates h5 (``tiles/<slide_id>.h5``) and the one tile-to-h5 step.

File contract (DESIGN.md section 3): dataset ``coords`` (N,2) int64, level-0 top-left (x, y),
the name CLAM and TRIDENT use, carrying their attributes (:func:`coords_dataset_attrs`: CLAM's
``patch_level``, ``patch_size`` (px read at that level), ``level_dim``, ``downsample``,
``downsampled_level_dim``, ``name``; TRIDENT's ``patch_size_level0``, ``level0_magnification``,
``target_magnification``, ``overlap``, ``level0_width``, ``level0_height``), so both tools'
readers use our file as is; ``tissue_fraction`` (N,) float32; file attributes
``target_mpp``, ``tile_size_px``, ``patch_size_level0``, ``read_level``, ``read_size_px``,
``slide_mpp``, ``mpp_source``, ``level0_width``, ``level0_height``, ``tissue_fraction_min``,
``histo_net_version`` plus ``read_level_downsample``, ``stride_px``, ``tiling_config`` (JSON),
``format_version``. :func:`ensure_tiles` is used by ``histo-net tile``, training and evaluation.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from histo_net.config import TilingConfig
from histo_net.errors import HistoNetError, TilesFileError
from histo_net.io_utils import atomic_path, h5_attr_value, safe_child
from histo_net.types import Coords
from histo_net.wsi.inputs import SlideSpec
from histo_net.wsi.slide import ReadPlan, open_slide
from histo_net.wsi.tiling import TilingResult
from histo_net.wsi.tiling_qc import write_tissue_qc_png
from histo_net.wsi.watchdog import tile_with_limit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilesFile:
    """A tiles h5 as read back: coordinates, how to read each tile, and where they came from."""

    path: Path
    coords: Coords                 # (N,2) int64 level-0 top-left (x, y)
    tissue_fraction: np.ndarray    # (N,) float32
    plan: ReadPlan
    slide_mpp: float
    mpp_source: str
    level0_size: tuple[int, int]   # (width, height) level-0 px
    tiling_config_json: str | None

    @property
    def n_tiles(self) -> int:
        """Number of tiles N."""
        return len(self.coords)

    def settings_match(self, cfg: TilingConfig, mpp: float) -> bool:
        """True when written with ``cfg`` for a slide of ``mpp`` um/px (skip-unless-overwrite)."""
        if not math.isclose(self.slide_mpp, float(mpp), rel_tol=1e-6):
            return False
        if self.tiling_config_json is None:
            return False
        try:
            return bool(json.loads(self.tiling_config_json) == json.loads(cfg.model_dump_json()))
        except ValueError:
            return False


def plan_from_attrs(attrs: dict[str, Any]) -> ReadPlan:
    """The ``ReadPlan`` recorded in a tiles h5's attributes (``KeyError`` when incomplete)."""
    patch = int(attrs["patch_size_level0"])
    read = int(attrs["read_size_px"])
    ds = float(attrs.get("read_level_downsample", patch / max(read, 1)))
    return ReadPlan(float(attrs["target_mpp"]), int(attrs["tile_size_px"]), int(attrs["read_level"]),
                    ds, read, patch)


def coords_dataset_attrs(result: TilingResult, level_dimensions: tuple[tuple[int, int], ...],
                         name: str) -> dict[str, Any]:
    """CLAM's and TRIDENT's attributes of the ``coords`` dataset for ``result``.

    Both tools read ``patch_size``, and they mean different frames by it: CLAM reads
    ``patch_size`` px at ``patch_level``; TRIDENT reads ``patch_size`` px at
    ``target_magnification`` (with ``10 / magnification`` = um/px). We give the read level's
    values to both, so each reads exactly our tile footprint (``patch_size_level0`` level-0
    px) from the same level; they resize to their encoder's input size as they always do.
    Our own ``tile_size_px`` / ``target_mpp`` stay on the file.
    """
    plan = result.plan
    level_w, level_h = level_dimensions[plan.level]
    ds = float(plan.level_downsample)
    level0_mag = 10.0 / float(result.attrs["slide_mpp"])
    stride_at_level = float(result.attrs["stride_px"]) * plan.read_size_px / plan.tile_size_px
    return {
        "patch_size": int(plan.read_size_px),
        "patch_level": int(plan.level),
        "downsample": np.array([ds, ds], np.float64),
        "level_dim": np.array([level_w, level_h], np.int64),
        "downsampled_level_dim": np.array([level_w, level_h], np.int64),
        "name": str(name),
        "patch_size_level0": int(plan.patch_size_level0),
        "level0_magnification": level0_mag,
        "target_magnification": level0_mag / ds,
        "overlap": max(0, round(plan.read_size_px - stride_at_level)),
        "level0_width": int(result.attrs["level0_width"]),
        "level0_height": int(result.attrs["level0_height"]),
    }


def write_tiles_h5(path: Path, result: TilingResult,
                   coords_attrs: dict[str, Any] | None = None) -> None:
    """Atomically write ``coords`` (N,2) int64 (with ``coords_attrs`` on it, see
    :func:`coords_dataset_attrs`), ``tissue_fraction`` (N,) float32 and file attributes."""
    with atomic_path(Path(path)) as tmp, h5py.File(tmp, "w") as h5:
        coords = h5.create_dataset("coords", data=np.asarray(result.coords, np.int64))
        for key, value in (coords_attrs or {}).items():
            coords.attrs[key] = value
        h5.create_dataset("tissue_fraction", data=np.asarray(result.tissue_fraction, np.float32))
        for key, value in result.attrs.items():
            h5.attrs[key] = value


def read_tiles_h5(path: Path) -> TilesFile:
    """Read a tiles h5; ``TilesFileError`` (one line, naming the file) when unreadable."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            coords = np.asarray(h5["coords"][()], dtype=np.int64)
            frac = (np.asarray(h5["tissue_fraction"][()], dtype=np.float32)
                    if "tissue_fraction" in h5 else np.ones(len(coords), np.float32))
            attrs = {key: h5_attr_value(val) for key, val in h5.attrs.items()}
        plan = plan_from_attrs(attrs)
        tiles = TilesFile(
            path=path, coords=coords, tissue_fraction=frac, plan=plan,
            slide_mpp=float(attrs["slide_mpp"]), mpp_source=str(attrs.get("mpp_source", "")),
            level0_size=(int(attrs["level0_width"]), int(attrs["level0_height"])),
            tiling_config_json=str(attrs["tiling_config"]) if "tiling_config" in attrs else None)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TilesFileError(f"{path}: not a readable tiles file ({reason})") from None
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise TilesFileError(f"{path}: 'coords' has shape {coords.shape}, expected (N, 2)")
    return tiles


@dataclass(frozen=True)
class TileOutcome:
    """What :func:`ensure_tiles` did for one slide."""

    tiles: TilesFile
    skipped: bool                  # an existing file with the same settings was kept
    tissue_area_mm2: float | None  # None when skipped
    seconds: float

    def summary_line(self, slide_id: str) -> str:
        """One human-readable line for the console."""
        mpp = f"mpp {self.tiles.slide_mpp:.4g} ({self.tiles.mpp_source})"
        if self.skipped:
            return (f"{slide_id}: skipped, already tiled with the same settings "
                    f"({self.tiles.n_tiles} tiles, {mpp}); use --overwrite to redo")
        return (f"{slide_id}: {self.tiles.n_tiles} tiles, tissue {self.tissue_area_mm2:.2f} mm2, "
                f"{mpp}, level {self.tiles.plan.level}, {self.seconds:.1f} s")


def tiles_path(tiles_dir: Path, slide_id: str) -> Path:
    """``tiles_dir/<slide_id>.h5`` (checked to stay inside ``tiles_dir``)."""
    return safe_child(tiles_dir, f"{slide_id}.h5")


def _existing_match(h5_path: Path, spec: SlideSpec, cfg: TilingConfig) -> TilesFile | None:
    """The existing tiles file when it was written with ``cfg`` for this slide's mpp, else None."""
    try:
        existing = read_tiles_h5(h5_path)
    except HistoNetError:
        logger.warning("%s: unreadable tiles file; tiling again", h5_path)
        return None
    with open_slide(spec.path, mpp_override=spec.mpp) as slide:  # hard-limited open
        return existing if existing.settings_match(cfg, slide.mpp) else None


def ensure_tiles(spec: SlideSpec, cfg: TilingConfig, tiles_dir: Path, *, overwrite: bool = False,
                 write_qc: bool = True, timeout_s: float | None = None) -> TileOutcome:
    """Tile ``spec`` into ``tiles_dir/<slide_id>.h5`` (+ ``_qc.png``) unless already done.

    An existing readable file written with the same settings for the same slide mpp is
    kept (``skipped``) unless ``overwrite``. Open, tiling and thumbnail run under the
    per-slide wall-clock limit ``timeout_s`` (None: scaled by the slide's size; see
    :mod:`histo_net.wsi.watchdog`). Raises typed ``HistoNetError`` s for bad slides.
    """
    start = time.perf_counter()
    h5_path = tiles_path(tiles_dir, spec.slide_id)
    if h5_path.is_file() and not overwrite:
        existing = _existing_match(h5_path, spec, cfg)
        if existing is not None:
            return TileOutcome(existing, True, None, time.perf_counter() - start)
    tiled = tile_with_limit(spec.path, spec.mpp, cfg, timeout_s)
    result = tiled.result
    if write_qc:
        write_tissue_qc_png(safe_child(tiles_dir, f"{spec.slide_id}_qc.png"), result)
    # written last: its presence means the QC picture exists
    write_tiles_h5(h5_path, result, coords_dataset_attrs(result, tiled.level_dimensions, spec.slide_id))
    return TileOutcome(read_tiles_h5(h5_path), False, float(result.tissue_area_mm2),
                       time.perf_counter() - start)
