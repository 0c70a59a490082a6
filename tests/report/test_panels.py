"""Confirmatory-stain panels belong to the classes they describe."""

from __future__ import annotations

import pytest

from histo_net.report.html import STAIN_PANELS, panel_for
from histo_net.taxonomy import (
    NEUROENDOCRINE,
    OTHER_SMALL_ROUND_CELL,
    SUBTYPE_LABEL,
    TUMOUR_SUBTYPES,
)


@pytest.mark.parametrize("subtype", TUMOUR_SUBTYPES)
def test_each_subtype_gets_its_label_panel(subtype: str) -> None:
    assert panel_for(subtype) is STAIN_PANELS[SUBTYPE_LABEL[subtype]]


def test_small_cell_and_merkel_are_neuroendocrine_and_foreign_classes_get_none() -> None:
    assert panel_for("nec_small_cell") is STAIN_PANELS[NEUROENDOCRINE]
    assert panel_for("merkel_cell_like") is STAIN_PANELS[NEUROENDOCRINE]
    assert panel_for(OTHER_SMALL_ROUND_CELL) is STAIN_PANELS[OTHER_SMALL_ROUND_CELL]
    for foreign in ("tumour", "normal", "adenocarcinoma", "class_1"):
        assert panel_for(foreign) is None
