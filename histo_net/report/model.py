"""The report model: everything one slide's report shows, from one prediction pass.

Plain data (arrays, dataclasses), no I/O; :mod:`histo_net.report.write` renders and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from histo_net.io_utils import sanitize_slide_id

REPORT_SCHEMA_VERSION = 1
RESEARCH_USE_ONLY = "Research use only \u2014 not for diagnostic use."
INDETERMINATE_TEXT = "Indeterminate \u2014 refer for immunohistochemistry"


@dataclass
class GalleryTile:
    """One tile shown in the report gallery.

    ``rgb`` (H, W, 3) uint8 at the model's tile mpp; ``coords_level0`` top-left (x, y);
    ``attention`` its MIL weight (the slide's weights sum to 1); ``probs`` tile-class probabilities.
    """

    rgb: np.ndarray
    coords_level0: tuple[int, int]
    attention: float
    probs: dict[str, float]


@dataclass
class SlideReport:
    """Everything the report shows for one slide, from one prediction pass.

    ``coords_level0`` (N, 2) int64; ``attention`` (N,) sums to 1; ``tile_probs``
    (N, len(tile_class_names)); ``thumbnail`` (H, W, 3) uint8 at ``thumbnail_downsample``
    level-0 px per px; ``tissue_mask`` (h, w) bool at ``tissue_downsample``.
    ``slide_name`` is the original file name, for display only (always escaped).
    """

    slide_id: str
    slide_name: str
    predicted_class: str
    status: str  # "ok" | "indeterminate"
    probabilities: dict[str, float]
    positive_class: str
    threshold: float
    indeterminate_band: tuple[float, float]
    tile_class_names: list[str]
    coords_level0: np.ndarray
    patch_size_level0: int
    attention: np.ndarray
    tile_probs: np.ndarray
    thumbnail: np.ndarray
    thumbnail_downsample: float
    tissue_mask: np.ndarray
    tissue_downsample: float
    top_tiles: list[GalleryTile] = field(default_factory=list)
    bottom_tiles: list[GalleryTile] = field(default_factory=list)
    qc: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    label: str | None = None
    level0_size: tuple[int, int] | None = None  # (width, height) level-0 px; GeoJSON clips to it

    @property
    def indeterminate(self) -> bool:
        """True when the calibrated probability fell in the abstention band."""
        return self.status != "ok"

    @property
    def tile_count(self) -> int:
        """Number of tiles N."""
        return len(self.coords_level0)


def prob_file_name(class_name: str) -> str:
    """File name of a class's probability heatmap, safe for any class name."""
    return f"prob_{sanitize_slide_id(class_name)}.png"


def heatmap_classes(report: SlideReport) -> list[str]:
    """Slide classes that have a tile-probability column (all tile classes if none match)."""
    shown = [c for c in report.probabilities if c in report.tile_class_names]
    return shown or list(report.tile_class_names)


def attention_title(report: SlideReport) -> str:
    """Heatmap title naming what attention explains."""
    target = "indeterminate" if report.indeterminate else report.predicted_class
    return f"Attention: which tiles drove the slide prediction ({target})"
