"""Per-subtype morphology: what a pathologist uses (architecture, chromatin, moulding,
mitoses, apoptoses, nucleoli, cytoplasm quality, cell borders), as ranges from which
every slide draws its own values.

Nothing here sets nuclear size, cell density, stain, blur, JPEG quality or tumour
fraction: those nuisance variables are drawn in :mod:`histo_net.synth.spec` from one
distribution for every subtype (``standard`` difficulty). Ranges overlap on purpose
(a NET with solid areas, a lymphoma with some fibrous nesting).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from histo_net.errors import ConfigError
from histo_net.taxonomy import TUMOUR_SUBTYPES

Tone = tuple[float, float, float, float]

CHROMATIN_KINDS = ("salt_pepper", "fine_granular", "dusty", "coarse_clumped", "powdery", "coarse")
CYTOPLASM_KINDS = ("eosinophilic", "amphophilic", "basophilic", "clear", "dense_eosinophilic")
STROMA_KINDS = ("fibrovascular", "collagen", "fibrous")
ROSETTE_KINDS = ("none", "lumen", "fibrillary")


@dataclass(frozen=True)
class Morphology:
    """One slide's tumour morphology (drawn from its subtype's ranges)."""

    subtype: str
    # architecture (shares are fractions of the tumour area; the rest is solid sheets)
    nest_share: float
    trabecular_share: float
    nest_um: float            # pitch of nests / lobules
    septum_um: float          # half width of septa, bands, strands
    stroma_kind: str
    ribbon_cells: float       # trabecula thickness in cell pitches
    palisade: float           # 0..1 nuclei at nest / ribbon borders point at the border
    cleft_um: float           # width of retraction clefts between tumour cells and septa
    cleft_share: float        # share of the septum length with a cleft
    rosette_kind: str
    rosette_share: float      # share of 32 um rosette sites that hold a rosette
    cling: float              # 0..1 central loss of cohesion of nests (alveolar pattern)
    discohesion: float        # 0..1 retraction spaces between all cells
    necrosis_share: float
    crush_share: float
    perivascular_sparing: bool
    # cells
    size_cv: float            # within-slide nuclear size variation (log-normal sigma)
    elongation: float         # 0 round .. 1 axis ratio up to 2
    contour: float            # outline roughness
    nc_fill: float            # 0 moderate cytoplasm .. 1 nuclei fill the cell (scant cytoplasm)
    moulding: float           # 0 none; > 0 nuclei press on each other (scale-up, clipped)
    chromatin: str
    chromatin_contrast: float
    darkness: float           # nuclear haematoxylin level
    dark_cv: float
    rim: float                # nuclear membrane prominence
    nucleoli: float           # share of nuclei with a visible nucleolus
    nucleolus_um: float
    mitosis: float            # share of cells in mitosis
    apoptosis: float          # share of apoptotic bodies
    cytoplasm: str
    border: float             # cell membrane visibility 0..1
    rhabdoid: float           # share of cells with dense pink (rhabdomyoblastic) cytoplasm


Range = tuple[float, float] | float | str | bool

_COMMON: dict[str, Range] = {
    "nest_share": 0.0, "trabecular_share": 0.0, "nest_um": (60.0, 100.0), "septum_um": (1.8, 2.8),
    "stroma_kind": "fibrovascular", "ribbon_cells": (2.2, 3.0), "palisade": 0.0,
    "cleft_um": (1.0, 2.0), "cleft_share": 0.0,
    "rosette_kind": "none", "rosette_share": 0.0, "cling": 0.0, "discohesion": 0.0,
    "necrosis_share": 0.0, "crush_share": 0.0, "perivascular_sparing": False,
    "size_cv": (0.08, 0.12), "elongation": (0.05, 0.2), "contour": (0.05, 0.08), "nc_fill": 0.0, "moulding": 0.0,
    "chromatin_contrast": (0.9, 1.1), "darkness": (0.85, 0.95), "dark_cv": 0.06, "rim": 0.2,
    "nucleoli": 0.0, "nucleolus_um": (0.55, 0.75), "mitosis": 0.004, "apoptosis": 0.004,
    "border": 0.0, "rhabdoid": 0.0,
}

#: per-subtype ranges at ``standard`` difficulty (anything not named comes from _COMMON)
STANDARD: dict[str, dict[str, Range]] = {
    "net_well_differentiated": {
        "nest_share": (0.35, 0.6), "trabecular_share": (0.15, 0.35), "palisade": (0.5, 0.8),
        "cleft_share": (0.3, 0.5), "cleft_um": (1.0, 2.0), "rosette_kind": "lumen",
        "rosette_share": (0.15, 0.35), "chromatin": "salt_pepper", "size_cv": (0.06, 0.1),
        "elongation": (0.05, 0.15), "contour": 0.04, "rim": 0.3, "mitosis": (0.0, 0.002),
        "apoptosis": (0.0, 0.003), "cytoplasm": "eosinophilic", "border": (0.15, 0.35),
        "necrosis_share": (0.0, 0.03),
    },
    "nec_small_cell": {
        "nest_share": (0.2, 0.45), "septum_um": (1.5, 2.2), "crush_share": (0.06, 0.16),
        "cleft_share": (0.4, 0.7), "discohesion": (0.05, 0.15), "necrosis_share": (0.06, 0.18),
        "chromatin": "fine_granular", "chromatin_contrast": (0.8, 1.0), "darkness": (0.86, 0.96),
        "elongation": (0.35, 0.6), "size_cv": (0.1, 0.15), "contour": (0.06, 0.1),
        "nc_fill": (0.75, 0.95), "moulding": (0.06, 0.1), "rim": 0.1, "mitosis": (0.015, 0.03),
        "apoptosis": (0.02, 0.04), "cytoplasm": "amphophilic",
    },
    "merkel_cell_like": {
        "trabecular_share": (0.25, 0.45), "stroma_kind": "collagen", "septum_um": (3.0, 5.5),
        "ribbon_cells": (2.5, 4.0), "crush_share": (0.0, 0.05), "necrosis_share": (0.0, 0.08),
        "cleft_share": (0.3, 0.5), "cleft_um": (1.0, 2.0), "discohesion": (0.05, 0.15),
        "chromatin": "dusty", "chromatin_contrast": (0.8, 1.0), "rim": 0.25, "nc_fill": (0.55, 0.75),
        "moulding": (0.02, 0.05), "nucleoli": (0.05, 0.15), "nucleolus_um": 0.5,
        "mitosis": (0.012, 0.025), "apoptosis": (0.015, 0.03), "cytoplasm": "amphophilic",
    },
    "lymphoma_like": {
        "nest_share": (0.0, 0.25), "nest_um": (90.0, 140.0), "stroma_kind": "fibrous",
        "septum_um": (1.5, 3.0), "discohesion": (0.2, 0.35), "nc_fill": (0.5, 0.7),
        "necrosis_share": (0.0, 0.06), "chromatin": "coarse_clumped", "size_cv": (0.18, 0.26),
        "elongation": (0.1, 0.3), "contour": (0.12, 0.18), "dark_cv": 0.12, "rim": 0.15,
        "nucleoli": (0.2, 0.4), "mitosis": (0.015, 0.03), "apoptosis": (0.02, 0.035),
        "cytoplasm": "basophilic",
    },
    "ewing_like": {
        "nest_share": (0.1, 0.3), "nest_um": (120.0, 180.0), "stroma_kind": "fibrous",
        "septum_um": (1.5, 2.5), "rosette_kind": "fibrillary", "rosette_share": (0.05, 0.2),
        "necrosis_share": (0.04, 0.14), "perivascular_sparing": True, "chromatin": "powdery",
        "chromatin_contrast": (1.4, 1.8), "size_cv": (0.05, 0.08), "elongation": (0.0, 0.1),
        "contour": 0.04, "rim": 0.25, "nc_fill": (0.45, 0.65), "darkness": (0.9, 1.0),
        "nucleoli": (0.0, 0.05), "nucleolus_um": 0.5, "mitosis": (0.01, 0.02),
        "apoptosis": (0.01, 0.02), "cytoplasm": "clear", "border": 0.0,
    },
    "alveolar_rms_like": {
        "nest_share": (0.5, 0.8), "nest_um": (70.0, 120.0), "stroma_kind": "fibrous",
        "septum_um": (1.2, 2.5), "palisade": (0.2, 0.4), "cling": (0.5, 0.8),
        "discohesion": (0.05, 0.2), "necrosis_share": (0.0, 0.06), "chromatin": "coarse",
        "chromatin_contrast": (1.2, 1.6), "size_cv": (0.12, 0.18), "contour": (0.06, 0.1),
        "rim": 0.2, "nc_fill": (0.35, 0.55), "nucleoli": (0.25, 0.45), "nucleolus_um": (0.7, 0.9),
        "mitosis": (0.01, 0.02), "apoptosis": (0.008, 0.015), "cytoplasm": "amphophilic",
        "border": (0.1, 0.25), "rhabdoid": (0.02, 0.05),
    },
}

#: ``easy``: purer architecture (no solid NET, no nesting lymphoma, crisper septa)
EASY_CHANGES: dict[str, dict[str, Range]] = {
    "net_well_differentiated": {"nest_share": (0.55, 0.7), "trabecular_share": (0.3, 0.45)},
    "nec_small_cell": {"nest_share": 0.0},
    "lymphoma_like": {"nest_share": 0.0},
    "alveolar_rms_like": {"nest_share": (0.85, 1.0)},
}

#: (h_scale, h_offset, e_scale, e_offset) per subtype: an affine tone map of the tumour's
#: stain concentrations, calibrated (``python -m histo_net.synth.calibrate``) so every
#: subtype has the same RGB mean and spread under the reference stain.
TONE: dict[str, Tone] = {
    "net_well_differentiated": (1.193, 0.0477, 0.8381, -0.0761),
    "nec_small_cell": (1.0136, -0.0134, 0.9353, -0.0209),
    "merkel_cell_like": (0.9902, -0.0, 0.9571, -0.0106),
    "lymphoma_like": (0.9314, -0.0134, 1.127, 0.0684),
    "ewing_like": (0.9366, 0.0049, 1.1058, 0.0033),
    "alveolar_rms_like": (0.96, 0.0004, 1.0534, 0.0382),
}


#: per-subtype multiplier of the chromatin contrast, calibrated with ``TONE`` so every subtype
#: has the same mean fine band-pass energy (no subtype is "sharper" than another overall)
TEXTURE_GAIN: dict[str, float] = {s: 1.0 for s in TUMOUR_SUBTYPES}


def _draw(value: Range, rng: np.random.Generator) -> Any:
    if isinstance(value, tuple):
        return float(rng.uniform(value[0], value[1]))
    return value


def subtype_ranges(subtype: str, difficulty: str) -> dict[str, Range]:
    """The full range table of ``subtype`` at ``difficulty`` (``easy`` or ``standard``)."""
    if subtype not in STANDARD:
        raise ConfigError(f"subtype {subtype!r}: expected one of {', '.join(STANDARD)}")
    table = {**_COMMON, **STANDARD[subtype]}
    if difficulty == "easy":
        table.update(EASY_CHANGES.get(subtype, {}))
    elif difficulty != "standard":
        raise ConfigError(f"difficulty {difficulty!r}: expected 'easy' or 'standard'")
    return table


def draw_morphology(subtype: str, difficulty: str, rng: np.random.Generator) -> Morphology:
    """One slide's morphology: every range drawn uniformly, in field order (deterministic)."""
    table = subtype_ranges(subtype, difficulty)
    values = {f.name: _draw(table[f.name], rng) for f in fields(Morphology) if f.name != "subtype"}
    if values["nest_share"] + values["trabecular_share"] > 1.0:
        values["trabecular_share"] = 1.0 - values["nest_share"]
    return Morphology(subtype=subtype, **values)
