"""Class names shared by every stage: the slide-level question and the reserved tile class.

The slide-level question is binary: neuroendocrine neoplasm vs other small round cell
tumour. Tiles outside annotated tumour get the reserved class ``non_tumour``.
"""

from __future__ import annotations

NEUROENDOCRINE = "neuroendocrine"
OTHER_SMALL_ROUND_CELL = "other_small_round_cell"
#: slide classes in bundle order; the first is the positive class by default
DEFAULT_CLASSES: tuple[str, ...] = (NEUROENDOCRINE, OTHER_SMALL_ROUND_CELL)
DEFAULT_POSITIVE_CLASS = NEUROENDOCRINE
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
    if lowered == OTHER_SMALL_ROUND_CELL or lowered.startswith("other"):
        return False
    return ("neuroendocrine" in lowered or lowered in {"net", "nec"} or lowered.startswith(("net_", "nec_"))
            or "merkel" in lowered)
