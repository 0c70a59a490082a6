"""The ONE decision rule, vectorised: calibrated probabilities -> predicted class + indeterminate.

Used for a single slide in prediction and for whole cohorts in evaluation, so both make
the same call on the same slide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

INDETERMINATE = "indeterminate"
OK = "ok"


def decide(probabilities: npt.ArrayLike, *, threshold: float, band: tuple[float, float],
           positive_index: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Predicted class index and indeterminate flag per slide.

    Args:
        probabilities: (S,C) calibrated class probabilities (or (C,) for one slide).
        threshold: binary task: call the positive class when its probability p >= threshold.
        band: (lo, hi); binary: indeterminate when lo <= p <= hi (edges inclusive); more
            classes: argmax, indeterminate when the top probability is below ``hi``.
        positive_index: column of the positive class (binary task).
    Returns:
        (S,) int64 class indices and (S,) bool indeterminate flags ((1,) for a (C,) input).
    """
    probs = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    lo, hi = float(band[0]), float(band[1])
    if probs.shape[1] == 2:
        p = probs[:, positive_index]
        preds = np.where(p >= threshold, positive_index, 1 - positive_index).astype(np.int64)
        return preds, (p >= lo) & (p <= hi)
    top = probs.argmax(axis=1).astype(np.int64)
    return top, probs.max(axis=1) < hi


@dataclass
class SlideDecision:
    """Calibrated slide-level output of one MIL pass.

    ``logits`` (C,), ``probabilities`` (C,) calibrated in ``class_names`` order,
    ``attention`` (N,) summing to 1.
    """

    class_names: list[str]
    logits: np.ndarray
    probabilities: np.ndarray
    attention: np.ndarray
    predicted_class: str
    status: str  # OK | INDETERMINATE

    @property
    def indeterminate(self) -> bool:
        """True when the calibrated probability fell in the abstention band."""
        return self.status != OK

    def probability_dict(self) -> dict[str, float]:
        """Class name -> calibrated probability."""
        return {name: float(p) for name, p in zip(self.class_names, self.probabilities)}
