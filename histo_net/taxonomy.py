"""Class names shared by every stage: the slide-level question and the reserved tile class.

The slide-level question is binary: neuroendocrine neoplasm vs other small round cell
tumour; each slide may also carry a subtype (the synthetic cohort's six, and ``normal``).
Small-cell and Merkel cell carcinoma are poorly differentiated neuroendocrine carcinomas,
so they sit under ``neuroendocrine``. Tiles outside annotated tumour get the reserved
class ``non_tumour``. Pure constants: every stage (synth, train, report) shares them.
"""

from __future__ import annotations

NEUROENDOCRINE = "neuroendocrine"
OTHER_SMALL_ROUND_CELL = "other_small_round_cell"
#: slide classes in bundle order; the first is the positive class by default
DEFAULT_CLASSES: tuple[str, ...] = (NEUROENDOCRINE, OTHER_SMALL_ROUND_CELL)
DEFAULT_POSITIVE_CLASS = NEUROENDOCRINE
#: top-level slide labels, in class-index order (neuroendocrine is the positive class)
LABELS: tuple[str, ...] = DEFAULT_CLASSES
#: tile class for tiles outside tumour annotations (never a slide label)
NON_TUMOUR = "non_tumour"

#: slide outcomes beyond the classes (a confident call's outcome is the class name itself)
INDETERMINATE = "indeterminate"
NO_TUMOUR_DETECTED = "no_tumour_detected"
NOT_ASSESSABLE = "not_assessable"
NON_CALL_OUTCOMES: tuple[str, ...] = (INDETERMINATE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE)


def is_neuroendocrine(name: str) -> bool:
    """Whether a slide class (or subtype) name means neuroendocrine morphology.

    The default binary classes are matched exactly; other names (subtypes, custom classes)
    by the words pathologists use: ``neuroendocrine``, ``net_...``, ``nec_...``, ``merkel``.
    """
    lowered = name.lower().replace("-", "_")
    if lowered in SUBTYPE_LABEL:
        return SUBTYPE_LABEL[lowered] == NEUROENDOCRINE
    if lowered == OTHER_SMALL_ROUND_CELL or lowered.startswith("other"):
        return False
    return ("neuroendocrine" in lowered or lowered in {"net", "nec"} or lowered.startswith(("net_", "nec_"))
            or "merkel" in lowered)


#: label -> its tumour subtypes
TAXONOMY: dict[str, tuple[str, ...]] = {
    NEUROENDOCRINE: ("net_well_differentiated", "nec_small_cell", "merkel_cell_like"),
    OTHER_SMALL_ROUND_CELL: ("lymphoma_like", "ewing_like", "alveolar_rms_like"),
}
#: the no-tumour outcome: tumour fraction 0, no tumour polygons, empty ``label``
NORMAL = "normal"
TUMOUR_SUBTYPES: tuple[str, ...] = tuple(s for subs in TAXONOMY.values() for s in subs)
SUBTYPES: tuple[str, ...] = (*TUMOUR_SUBTYPES, NORMAL)
#: subtype -> top-level label ("" for ``normal``)
SUBTYPE_LABEL: dict[str, str] = {**{s: lab for lab, subs in TAXONOMY.items() for s in subs}, NORMAL: ""}

#: the stains a pathologist would order to confirm each subtype (for the report's box)
CONFIRMATORY_STAINS: dict[str, tuple[str, ...]] = {
    "net_well_differentiated": ("synaptophysin", "chromogranin", "INSM1", "Ki-67 (grade)"),
    "nec_small_cell": ("synaptophysin", "INSM1", "TTF-1", "Ki-67", "Rb / p53"),
    "merkel_cell_like": ("CK20 (dot-like)", "Merkel cell polyomavirus LT", "INSM1", "TTF-1 (negative)"),
    "lymphoma_like": ("CD45", "CD20 / CD3", "Ki-67"),
    "ewing_like": ("CD99 (membranous)", "NKX2.2", "EWSR1 FISH"),
    "alveolar_rms_like": ("desmin", "myogenin", "MyoD1", "FOXO1 FISH"),
    NORMAL: (),
}

#: one sentence per subtype: the features the generator draws (README, report, preview)
SUBTYPE_FEATURES: dict[str, str] = {
    "net_well_differentiated": "organoid nests and trabeculae framed by thin fibrovascular septa with "
    "peripheral palisading and small rosettes, monotonous round nuclei with salt-and-pepper chromatin, "
    "moderate granular eosinophilic cytoplasm, very rare mitoses.",
    "nec_small_cell": "solid sheets of oval nuclei moulded against each other with scant cytoplasm, "
    "finely granular chromatin without nucleoli, crush artefact, necrosis, frequent mitoses and "
    "apoptotic bodies.",
    "merkel_cell_like": "sheets and trabeculae between dermal collagen bundles, round nuclei with dusty "
    "finely dispersed chromatin and a crisp membrane, scant cytoplasm, many mitoses and apoptoses.",
    "lymphoma_like": "discohesive sheets of non-cohesive cells with retraction spaces, variable nuclei "
    "with irregular contours and coarse clumped chromatin, some nucleoli, scant basophilic cytoplasm.",
    "ewing_like": "sheets of uniform round nuclei with fine powdery chromatin, scant clear or vacuolated "
    "cytoplasm with indistinct borders, fibrous strands, occasional Homer Wright rosettes.",
    "alveolar_rms_like": "nests divided by thick fibrous septa, cells clinging to the septa with central "
    "loss of cohesion (alveolar spaces), round nuclei with coarse chromatin and nucleoli, scattered "
    "eosinophilic rhabdomyoblasts.",
    NORMAL: "no tumour: stroma, vessels, fat and lymphocytes only.",
}


def label_of(subtype: str) -> str:
    """Top-level label of ``subtype`` ("" for ``normal``); KeyError when unknown."""
    return SUBTYPE_LABEL[subtype]
