"""SubtypeHead: folding subtype logits into the top-level question, and the differential."""

from __future__ import annotations

import numpy as np
import pytest

from histo_net.errors import ConfigError
from histo_net.models.hierarchy import SubtypeHead, head_from_labels

CLASSES = ("neuroendocrine", "other_small_round_cell")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_top_logits_give_the_summed_subtype_probabilities() -> None:
    head = SubtypeHead(names=("a", "b", "c", "d", "e"), groups=(0, 0, 1, 1, 1), class_names=CLASSES)
    z = np.random.default_rng(0).normal(0, 3, (20, 5))
    p_sub = _softmax(z)
    p_top = _softmax(head.top_logits(z).astype(np.float64))
    np.testing.assert_allclose(p_top[:, 0], p_sub[:, :2].sum(1), atol=1e-5)
    np.testing.assert_allclose(p_top[:, 1], p_sub[:, 2:].sum(1), atol=1e-5)


def test_differential_sums_to_each_calibrated_class_probability() -> None:
    head = SubtypeHead(names=("a", "b", "c"), groups=(1, 0, 1), class_names=CLASSES)
    z = np.array([2.0, -1.0, 0.5])
    top = np.array([0.3, 0.7])  # a calibrated call, not the raw softmax
    diff = head.differential(z, top)
    assert diff[1] == pytest.approx(0.3)
    assert diff[0] + diff[2] == pytest.approx(0.7) and diff[0] > diff[2]
    assert head.best_in_class(diff, 1) == 0 and head.best_in_class(diff, 0) == 1


def test_head_from_labels_orders_by_class_then_taxonomy_and_rejects_bad_rows() -> None:
    rows = [("s1", "other_small_round_cell", "ewing_like"), ("s2", "neuroendocrine", "nec_small_cell"),
            ("s3", "neuroendocrine", "net_well_differentiated"), ("s4", "other_small_round_cell", "zzz_custom")]
    head = head_from_labels(rows, list(CLASSES))
    assert head.names == ("net_well_differentiated", "nec_small_cell", "ewing_like", "zzz_custom")
    assert head.groups == (0, 0, 1, 1)
    with pytest.raises(ConfigError, match="slide s9"):
        head_from_labels([*rows, ("s9", "neuroendocrine", "")], list(CLASSES))
    with pytest.raises(ConfigError, match="slide s9.*ewing_like"):
        head_from_labels([*rows, ("s9", "neuroendocrine", "ewing_like")], list(CLASSES))
    with pytest.raises(ConfigError, match="without a subtype"):
        head_from_labels(rows[1:3], list(CLASSES))
