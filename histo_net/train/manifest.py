"""Training / evaluation manifest checks, on top of the one reader in :mod:`histo_net.wsi.inputs`.

All problems are collected and raised together as ONE ``ConfigError``: missing columns or
files, empty fields, unknown labels, a single class, a patient with two labels, duplicate
slide ids, bad mpp values. Paths follow the one rule (relative to the manifest's folder).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from histo_net.errors import ConfigError
from histo_net.taxonomy import NON_TUMOUR
from histo_net.wsi.inputs import SlideSpec, parse_manifest

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("slide_id", "patient_id", "path", "label")
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class TrainManifest:
    """Validated manifest: labelled slides (patient_id and label set), class names, annotations."""

    source: Path
    slides: tuple[SlideSpec, ...]
    class_names: tuple[str, ...]
    has_annotations: bool


def _row_problems(spec: SlideSpec, allowed: set[str] | None, check_files: bool) -> list[str]:
    where = f"slide '{spec.slide_id}'"
    problems = []
    empty = [name for name, value in (("patient_id", spec.patient_id), ("label", spec.label))
             if not value]
    if empty:
        return [f"{where}: empty {', '.join(empty)}"]
    if check_files and not spec.path.is_file():
        problems.append(f"{where}: slide file not found: {spec.path}")
    if allowed is not None and spec.label not in allowed:
        problems.append(f"{where}: unknown label '{spec.label}' (expected one of: "
                        f"{', '.join(sorted(allowed))})")
    if spec.label == NON_TUMOUR:
        problems.append(f"{where}: label '{NON_TUMOUR}' is reserved for tile labels")
    if check_files and spec.annotations is not None and not spec.annotations.is_file():
        problems.append(f"{where}: annotation file not found: {spec.annotations}")
    return problems


def validate_manifest(
    path: Path | str, classes: list[str] | tuple[str, ...] | None = None, *,
    require_two_classes: bool = True, check_files: bool = True,
) -> TrainManifest:
    """Read ``path`` and check it for training/evaluation; one ``ConfigError`` listing every problem.

    ``classes`` restricts allowed labels (None: the manifest defines the classes). Class
    names returned are ``classes`` when given, else the sorted labels present.
    """
    parsed = parse_manifest(path)
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in parsed.columns]
    if missing_cols:
        raise ConfigError(f"{parsed.source}: manifest lacks column(s) {', '.join(missing_cols)} "
                          f"(has: {', '.join(parsed.columns) or 'none'})")
    if not parsed.specs and not parsed.problems:
        raise ConfigError(f"{parsed.source}: manifest has no slides")
    allowed = set(classes) if classes is not None else None
    problems = list(parsed.problems)
    slides: list[SlideSpec] = []
    patient_labels: dict[str, set[str]] = defaultdict(set)
    for spec in parsed.specs:
        row = _row_problems(spec, allowed, check_files)
        problems += row
        if spec.patient_id and spec.label:
            patient_labels[spec.patient_id].add(spec.label)
            slides.append(spec)
    for patient, labels in sorted(patient_labels.items()):
        if len(labels) > 1:
            problems.append(f"patient '{patient}' has slides with different labels "
                            f"({', '.join(sorted(labels))})")
    present = sorted({str(s.label) for s in slides})
    if require_two_classes and len(present) < 2:
        problems.append(f"only one class present ({', '.join(present) or 'none'}); "
                        "training needs at least two")
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        tail = f"; ... and {more} more" if more > 0 else ""
        raise ConfigError(f"{parsed.source}: {len(problems)} manifest problem(s): "
                          + "; ".join(shown) + tail)
    class_names = tuple(classes) if classes is not None else tuple(present)
    with_ann = any(s.annotations is not None for s in slides)
    return TrainManifest(parsed.source, tuple(slides), class_names, with_ann)
