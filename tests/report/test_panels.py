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


def _with_differential(status: str, predicted: str, subtypes: dict[str, float]):
    import dataclasses

    from tests.report.test_write import make_report

    return dataclasses.replace(make_report(status=status, predicted=predicted), outcome="",
                               subtype_probabilities=subtypes)


def test_stain_box_follows_the_most_probable_subtype_of_the_call() -> None:
    from histo_net.report.html import context_boxes, render_report_html

    diff = {"net_well_differentiated": 0.20, "nec_small_cell": 0.65, "merkel_cell_like": 0.06,
            "lymphoma_like": 0.05, "ewing_like": 0.03, "alveolar_rms_like": 0.01}
    boxes = context_boxes(_with_differential("ok", NEUROENDOCRINE, diff))
    assert "nec small cell" in boxes[0]["title"] and "TTF-1" in boxes[0]["items"]
    assert boxes[1] is STAIN_PANELS[NEUROENDOCRINE] and len(boxes) == 2
    other = {**diff, "nec_small_cell": 0.01, "net_well_differentiated": 0.02, "lymphoma_like": 0.9}
    boxes = context_boxes(_with_differential("ok", OTHER_SMALL_ROUND_CELL, other))
    assert "lymphoma like" in boxes[0]["title"] and "CD45" in boxes[0]["items"]
    # indeterminate: the named class's subtype box first, then the other class's
    titles = [b["title"] for b in context_boxes(_with_differential("indeterminate", NEUROENDOCRINE, diff))]
    assert "nec small cell" in titles[0] and any("lymphoma like" in t for t in titles[2:])
    html = render_report_html(_with_differential("ok", NEUROENDOCRINE, diff), {})
    assert "Subtype differential" in html and "65.0%" in html


def test_no_differential_keeps_the_class_panels_only() -> None:
    from histo_net.report.html import context_boxes

    boxes = context_boxes(_with_differential("ok", NEUROENDOCRINE, {}))
    assert boxes == [STAIN_PANELS[NEUROENDOCRINE]]
