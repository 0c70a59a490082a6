"""The report model: everything one slide's report shows, from one prediction pass.

Plain data (arrays, dataclasses), no I/O; :mod:`histo_net.report.write` renders and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from histo_net.features.ood import DomainCheck
from histo_net.io_utils import sanitize_slide_id
from histo_net.taxonomy import INDETERMINATE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE

REPORT_SCHEMA_VERSION = 1
RESEARCH_USE_ONLY = "Research use only \u2014 not for diagnostic use."
INDETERMINATE_TEXT = "Indeterminate \u2014 refer for immunohistochemistry"
NO_TUMOUR_TEXT = "No tumour detected \u2014 no classification made"
NOT_ASSESSABLE_TEXT = "Not assessable \u2014 outside what the model was trained on"


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
    predicted_class: str | None  # the class named with the outcome (None: none named)
    status: str  # "ok" | "indeterminate" | "no_tumour_detected" | "not_assessable"
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
    outcome: str = ""  # a class name (confident call) or a non-call outcome; "" = from status
    checks: list[DomainCheck] = field(default_factory=list)
    model_figures: dict = field(default_factory=dict)  # the bundle's validation_summary
    model_warnings: list[str] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)  # the bundle's CalibrationFit dict
    #: subtype head only: subtype -> probability, consistent with ``probabilities``
    subtype_probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        """The outcome: a class name or indeterminate / no_tumour_detected / not_assessable."""
        if self.outcome:
            return self.outcome
        return (self.predicted_class or "") if self.status == "ok" else self.status

    @property
    def indeterminate(self) -> bool:
        """True when the outcome is ``indeterminate`` (probability inside the band)."""
        return self.decision == INDETERMINATE

    @property
    def confident(self) -> bool:
        """True for a confident class call."""
        return self.decision not in (INDETERMINATE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE, "")

    @property
    def failed_checks(self) -> list[DomainCheck]:
        """The checks that did not pass (they explain a non-call outcome)."""
        return [c for c in self.checks if not c.passed]

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
    return f"Attention: which tiles drove the slide prediction ({report.decision})"


def statement(report: SlideReport) -> str:
    """The one-line call, e.g. ``neuroendocrine (calibrated probability 0.97)``."""
    decision = report.decision
    if decision == INDETERMINATE:
        return INDETERMINATE_TEXT
    if decision == NO_TUMOUR_DETECTED:
        return NO_TUMOUR_TEXT
    if decision == NOT_ASSESSABLE:
        return NOT_ASSESSABLE_TEXT
    prob = report.probabilities.get(decision)
    return f"{decision} (calibrated probability {prob:.2f})" if prob is not None else decision


def decision_json(report: SlideReport) -> dict:
    """The decision part of report.json: outcome, statement, checks, model figures."""
    return {"outcome": report.decision, "statement": statement(report),
            "checks": [c.to_json() for c in report.checks],
            "failed_checks": [c.describe() for c in report.failed_checks],
            "model_figures": dict(report.model_figures), "model_warnings": list(report.model_warnings),
            "calibration_slides": report.calibration.get("n_slides"),
            "calibration_method": report.calibration.get("method")}
