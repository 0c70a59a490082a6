"""The typed per-slide prediction record (stored in the batch state) and ``predictions.csv``."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from histo_net.batch.state import DONE, RunFiles, SlideState
from histo_net.io_utils import json_safe
from histo_net.taxonomy import INDETERMINATE, NOT_ASSESSABLE


@dataclass
class SlideSummary:
    """What one slide's prediction returns to the batch runner.

    ``probabilities`` are calibrated, keyed by class name; ``outcome`` is the decision:
    a class name (confident call), ``indeterminate``, ``no_tumour_detected`` or
    ``not_assessable``; ``predicted_class`` the class named with it ("" when none);
    ``status`` ``ok`` for a confident call, else the outcome; ``reasons`` the failed checks.
    """

    predicted_class: str
    status: str
    probabilities: dict[str, float]
    tile_count: int
    input_sha256: str = ""
    bundle_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""
    reasons: list[str] = field(default_factory=list)
    #: subtype head only: subtype -> probability (the differential; sums to 1)
    subtype_probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def top_subtype(self) -> tuple[str, float | None]:
        """The most probable subtype and its probability (``("", None)`` without a differential)."""
        if not self.subtype_probabilities:
            return "", None
        name = max(self.subtype_probabilities, key=self.subtype_probabilities.__getitem__)
        return name, self.subtype_probabilities[name]

    @property
    def decision(self) -> str:
        """The outcome (older records without one: the class when ``ok``, else the status)."""
        return self.outcome or (self.predicted_class if self.status == "ok" else self.status)

    @property
    def indeterminate(self) -> bool:
        """True when the outcome is ``indeterminate`` (probability inside the band)."""
        return self.decision == INDETERMINATE

    def display(self) -> str:
        """Short text for the console table, e.g. ``indeterminate (leans neuroendocrine)``."""
        outcome = self.decision
        if outcome == INDETERMINATE and self.predicted_class:
            return f"{outcome} (leans {self.predicted_class})"
        if outcome == NOT_ASSESSABLE and self.reasons:
            return f"{outcome}: {self.reasons[0].split(' ')[0]}"
        name, p = self.top_subtype
        if p is not None and outcome == self.predicted_class:
            return f"{outcome} (most like {name} {p:.0%})"
        return outcome

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict for the slide's state file."""
        return json_safe({**asdict(self), "indeterminate": self.indeterminate})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlideSummary | None:
        """Inverse of :meth:`to_json`; None for an empty summary (a failed slide)."""
        if not data or "predicted_class" not in data:
            return None
        return cls(predicted_class=str(data["predicted_class"]), status=str(data.get("status", "ok")),
                   probabilities={str(k): float(v) for k, v in (data.get("probabilities") or {}).items()},
                   tile_count=int(data.get("tile_count") or 0),
                   input_sha256=str(data.get("input_sha256") or ""),
                   bundle_sha256=str(data.get("bundle_sha256") or ""),
                   extra=dict(data.get("extra") or {}), outcome=str(data.get("outcome") or ""),
                   reasons=[str(r) for r in data.get("reasons") or []],
                   subtype_probabilities={str(k): float(v) for k, v in
                                          (data.get("subtype_probabilities") or {}).items()})


def _class_names_from(summaries: Sequence[SlideSummary | None]) -> list[str]:
    names: list[str] = []
    for summary in summaries:
        for name in summary.probabilities if summary else ():
            if name not in names:
                names.append(name)
    return names


def predictions_csv_text(states: Sequence[SlideState], class_names: Sequence[str] | None = None) -> str:
    """predictions.csv: slide_id, path, status, label, outcome, predicted_class, prob_<class>...,
    threshold-free ``indeterminate`` flag, reason (failed checks), tile_count, error (one row per
    state, in the given order); a model with a subtype head adds ``top_subtype`` and its
    probability after the class probabilities."""
    summaries = [SlideSummary.from_json(s.summary) if s.status == DONE else None for s in states]
    names = list(class_names) if class_names is not None else _class_names_from(summaries)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    with_subtypes = any(s is not None and s.subtype_probabilities for s in summaries)
    writer.writerow(["slide_id", "path", "status", "label", "outcome", "predicted_class",
                     *[f"prob_{c}" for c in names], *(["top_subtype", "prob_top_subtype"] if with_subtypes else []),
                     "indeterminate", "reason", "tile_count", "error"])
    for state, summ in zip(states, summaries):
        probs = summ.probabilities if summ else {}
        writer.writerow([
            state.slide_id, state.path, state.status, state.label or "",
            summ.decision if summ else "",
            summ.predicted_class if summ else "",
            *["" if probs.get(c) is None else f"{float(probs[c]):.6f}" for c in names],
            *(_subtype_cells(summ) if with_subtypes else []),
            "" if summ is None else str(summ.indeterminate).lower(),
            "; ".join(summ.reasons) if summ else "",
            "" if summ is None else summ.tile_count, state.error or "",
        ])
    return buffer.getvalue()


def _subtype_cells(summary: SlideSummary | None) -> list[str]:
    name, p = summary.top_subtype if summary else ("", None)
    return [name, "" if p is None else f"{p:.6f}"]


def prediction_run_files(class_names: Sequence[str] | None = None) -> RunFiles:
    """The predict stage's run files for :func:`histo_net.batch.runner.run_batch`."""
    def files(states: list[SlideState]) -> dict[str, str]:
        return {"predictions.csv": predictions_csv_text(states, class_names)}

    return files
