"""The one decision rule: outcomes, their precedence, and calls that never contradict the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from histo_net.predict.decision import decide, decide_outcomes, effective_band
from histo_net.taxonomy import INDETERMINATE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE

CLASSES = ["neuroendocrine", "other_small_round_cell"]


def _binary(p_pos: np.ndarray) -> np.ndarray:
    return np.stack([p_pos, 1 - p_pos], axis=1)  # positive class in column 0


def test_the_issue_example_is_no_longer_a_confident_call() -> None:
    """Fitted threshold 0.496: P(NET) = 0.496 < P(other) = 0.504 must not read `neuroendocrine`."""
    out = decide_outcomes(_binary(np.array([0.496])), class_names=CLASSES, threshold=0.496,
                          band=(0.49, 0.495), positive_index=0)
    assert out.outcome == [INDETERMINATE]
    assert out.named.tolist() == [1]  # the class with the highest probability, not the thresholded one
    assert effective_band((0.49, 0.495), 0.496) == (0.49, 0.5)


def test_confident_calls_never_contradict_the_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 4000)
    p[:50] = 0.5  # exact ties
    for threshold in (0.05, 0.3, 0.496, 0.5, 0.62, 0.95):
        for band in ((threshold, threshold), (0.45, 0.55), (0.0, 0.0), (0.9, 0.95)):
            probs = _binary(p)
            out = decide_outcomes(probs, class_names=CLASSES, threshold=threshold, band=band,
                                  positive_index=0)
            for row, outcome, named in zip(probs, out.outcome, out.named):
                if outcome in CLASSES:
                    k = CLASSES.index(outcome)
                    assert row[k] > row[1 - k], (threshold, band, row, outcome)
                if named >= 0:  # a named class is always strictly the most probable
                    assert row[named] > row[1 - named]
            assert all(o == INDETERMINATE for o, q in zip(out.outcome, p) if q == 0.5)


def test_decide_binary_band_edges_and_threshold() -> None:
    p_pos = np.array([0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 1.0])
    probs = _binary(p_pos)
    preds, ind = decide(probs, threshold=0.5, band=(0.4, 0.55), positive_index=0)
    assert preds.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # argmax (the tie at 0.5 takes column 0)
    assert ind.tolist() == [False, False, True, True, True, True, False, False]  # edges inclusive
    preds_other, ind_other = decide(probs[:, ::-1], threshold=0.5, band=(0.4, 0.55), positive_index=1)
    untied = [i for i in range(8) if i != 4]
    assert [preds_other[i] for i in untied] == [1 - preds[i] for i in untied]
    assert ind_other.tolist() == ind.tolist()


def test_band_always_covers_threshold_and_half() -> None:
    probs = _binary(np.array([0.25, 0.35, 0.45, 0.55]))
    _, ind = decide(probs, threshold=0.3, band=(0.28, 0.32), positive_index=0)
    assert ind.tolist() == [False, True, True, False]  # 0.35 and 0.45 lie between threshold and 0.5


def test_outcome_precedence() -> None:
    probs = _binary(np.array([0.99, 0.99, 0.99, 0.99, 0.5, 0.01]))
    out = decide_outcomes(
        probs, class_names=CLASSES, threshold=0.5, band=(0.4, 0.6), positive_index=0,
        image_ok=[False, True, True, True, True, True],
        tumour_detected=[False, False, True, True, True, True],
        embedding_ok=[False, False, False, True, True, True])
    assert out.outcome == [NOT_ASSESSABLE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE, CLASSES[0], INDETERMINATE,
                           CLASSES[1]]
    assert out.named.tolist() == [-1, -1, -1, 0, -1, 1]  # none named without a call; tie at 0.5


def test_single_slide_gives_the_same_outcome_as_the_cohort() -> None:
    probs = _binary(np.array([0.2, 0.52, 0.9]))
    whole = decide_outcomes(probs, class_names=CLASSES, threshold=0.5, band=(0.4, 0.6), positive_index=0)
    for i in range(3):
        one = decide_outcomes(probs[i], class_names=CLASSES, threshold=0.5, band=(0.4, 0.6), positive_index=0)
        assert one.outcome == [whole.outcome[i]] and one.named.tolist() == [whole.named[i]]


def test_multiclass_argmax_and_band() -> None:
    names = ["a", "b", "c"]
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.45, 0.45, 0.1]])
    preds, ind = decide(probs, threshold=0.5, band=(0.0, 0.5), positive_index=0)
    assert preds.tolist()[:3] == [0, 0, 2] and ind.tolist() == [False, True, False, True]
    out = decide_outcomes(probs, class_names=names, threshold=0.5, band=(0.0, 0.5), positive_index=0)
    assert out.outcome == ["a", INDETERMINATE, "c", INDETERMINATE]
    assert out.named.tolist() == [0, 0, 2, -1]


@pytest.mark.parametrize("bad", [np.nan])
def test_non_finite_probability_is_never_a_call(bad: float) -> None:
    out = decide_outcomes(np.array([[bad, bad]]), class_names=CLASSES, threshold=0.5, band=(0.4, 0.6),
                          positive_index=0)
    assert out.outcome == [INDETERMINATE]
