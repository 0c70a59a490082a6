"""The ONE decision rule, vectorised: calibrated probabilities + slide checks -> outcome.

Used for a single slide in prediction and for whole cohorts in evaluation, so both make
the same call on the same slide. Outcomes, in order of precedence:

1. ``not_assessable`` when an image check failed (too little tissue, blurred, stain beyond
   the training cohort's range);
2. ``no_tumour_detected`` when the tumour burden is below the fitted limit;
3. ``not_assessable`` when the slide's embeddings are outliers to the training set;
4. ``indeterminate`` when the calibrated probability lies in the band;
5. otherwise the class itself (a confident call).

The band always contains both the threshold and 0.5 (binary task), so a confident call is
always the class with the highest probability; an indeterminate slide names a class only
when its probability is strictly the highest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from histo_net.features.ood import DomainCheck
from histo_net.taxonomy import INDETERMINATE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE

OK = "ok"
__all__ = ["INDETERMINATE", "NOT_ASSESSABLE", "NO_TUMOUR_DETECTED", "OK", "Outcomes", "SlideDecision",
           "decide", "decide_outcomes", "effective_band"]


def effective_band(band: tuple[float, float], threshold: float) -> tuple[float, float]:
    """The binary band actually applied: ``band`` widened to contain ``threshold`` and 0.5.

    A probability between the threshold and 0.5 would otherwise give a call whose class
    has the lower probability (e.g. ``neuroendocrine`` at P = 0.496 with threshold 0.496).
    """
    lo, hi = float(band[0]), float(band[1])
    return min(lo, float(threshold), 0.5), max(hi, float(threshold), 0.5)


def decide(probabilities: npt.ArrayLike, *, threshold: float, band: tuple[float, float],
           positive_index: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Class with the highest probability and indeterminate flag per slide.

    Args:
        probabilities: (S,C) calibrated class probabilities (or (C,) for one slide).
        threshold: binary task: the fitted cut on the positive-class probability p; the band
            applied is :func:`effective_band` (it contains the threshold and 0.5).
        band: (lo, hi); binary: indeterminate when lo <= p <= hi (edges inclusive); more
            classes: indeterminate when the top probability is below ``hi``.
        positive_index: column of the positive class (binary task).
    Returns:
        (S,) int64 argmax class indices and (S,) bool indeterminate flags ((1,) for (C,)).
        Outside the band the argmax is the call; a confident call never has a lower
        probability than another class.
    """
    probs = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    top = probs.argmax(axis=1).astype(np.int64)
    if probs.shape[1] == 2:
        lo, hi = effective_band(band, threshold)
        p = probs[:, positive_index]
        indeterminate = (p >= lo) & (p <= hi)
        return top, indeterminate | ~np.isfinite(p)
    return top, ~(probs.max(axis=1) >= float(band[1]))


@dataclass
class Outcomes:
    """Vectorised outcomes of :func:`decide_outcomes` (row i = slide i).

    ``outcome`` (S,) str: a class name or one of the non-call outcomes; ``named`` (S,) int64:
    the class index shown with the outcome (-1 = none: no tumour, not assessable, or a tie);
    ``indeterminate`` (S,) bool: inside the band (whatever the outcome).
    """

    outcome: list[str]
    named: npt.NDArray[np.int64]
    indeterminate: npt.NDArray[np.bool_]


def decide_outcomes(probabilities: npt.ArrayLike, *, class_names: list[str], threshold: float,
                    band: tuple[float, float], positive_index: int,
                    image_ok: npt.ArrayLike | None = None,
                    tumour_detected: npt.ArrayLike | None = None,
                    embedding_ok: npt.ArrayLike | None = None) -> Outcomes:
    """The outcome of every slide (see the module docstring for the order).

    Args:
        probabilities: (S,C) calibrated probabilities (or (C,) for one slide).
        class_names: the C class names, column order.
        threshold, band, positive_index: as in :func:`decide`.
        image_ok, tumour_detected, embedding_ok: (S,) bool per slide check group; None = passed.
    """
    probs = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    n = probs.shape[0]
    top, indeterminate = decide(probs, threshold=threshold, band=band, positive_index=positive_index)

    def flag(values: npt.ArrayLike | None) -> npt.NDArray[np.bool_]:
        return np.ones(n, bool) if values is None else np.atleast_1d(np.asarray(values, dtype=bool))

    image, tumour, embedding = flag(image_ok), flag(tumour_detected), flag(embedding_ok)
    ordered = np.sort(probs, axis=1)
    strictly_highest = (ordered[:, -1] > ordered[:, -2]) if probs.shape[1] > 1 else np.ones(n, bool)
    labels = np.asarray(class_names, dtype=object)[top]
    outcome = np.select([~image, ~tumour, ~embedding, indeterminate],
                        [NOT_ASSESSABLE, NO_TUMOUR_DETECTED, NOT_ASSESSABLE, INDETERMINATE],
                        default=labels)
    shows_class = np.isin(outcome, [NOT_ASSESSABLE, NO_TUMOUR_DETECTED], invert=True) & strictly_highest
    named = np.where(shows_class, top, -1).astype(np.int64)
    return Outcomes(outcome=[str(v) for v in outcome], named=named, indeterminate=indeterminate)


@dataclass
class SlideDecision:
    """Calibrated slide-level output of one MIL pass and the slide checks.

    ``logits`` (C,), ``probabilities`` (C,) calibrated in ``class_names`` order,
    ``attention`` (N,) summing to 1. ``outcome`` is a class name (confident call) or one of
    ``indeterminate`` / ``no_tumour_detected`` / ``not_assessable``; ``predicted_class`` the
    class shown with it (None when none is named); ``checks`` every slide check that ran.
    """

    class_names: list[str]
    logits: np.ndarray
    probabilities: np.ndarray
    attention: np.ndarray
    predicted_class: str | None
    outcome: str
    checks: list[DomainCheck] = field(default_factory=list)
    #: subtype head only: subtype -> probability (each class's subtypes sum to its probability)
    subtype_probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``ok`` for a confident call, else the outcome."""
        return OK if self.outcome in self.class_names else self.outcome

    @property
    def indeterminate(self) -> bool:
        """True when the outcome is not a confident call."""
        return self.status != OK

    @property
    def failed_checks(self) -> list[DomainCheck]:
        """The checks that did not pass (they explain the outcome)."""
        return [c for c in self.checks if not c.passed]

    def probability_dict(self) -> dict[str, float]:
        """Class name -> calibrated probability."""
        return {name: float(p) for name, p in zip(self.class_names, self.probabilities)}
