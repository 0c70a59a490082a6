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
