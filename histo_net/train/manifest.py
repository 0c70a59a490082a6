"""Training / evaluation manifest: read and check everything before any tile is read.

All problems are collected and raised together as ONE ``ConfigError`` whose
message lists them: missing columns or files, empty fields, unknown labels, a
single class, a patient with two labels, duplicate slide ids, bad mpp values.
Relative paths resolve against the manifest's folder (then the working folder).
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from histo_net.errors import ConfigError
from histo_net.io_utils import sanitize_slide_id

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("slide_id", "patient_id", "path", "label")
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class TrainSlide:
    """One labelled slide. ``slide_id`` is already sanitised (safe as a file stem)."""

    slide_id: str
    patient_id: str
    path: Path
    label: str
    annotations: Path | None = None
    mpp: float | None = None


@dataclass(frozen=True)
class TrainManifest:
    """Validated manifest: slides, sorted slide class names, whether annotations exist."""

    source: Path
    slides: tuple[TrainSlide, ...]
    class_names: tuple[str, ...]
    has_annotations: bool


def _resolve(raw: str, base: Path) -> Path:
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    beside = base / path
    if beside.exists() or not path.exists():
        return beside
    return path.resolve()


def _parse_mpp(raw: str) -> float | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    value = float(raw)
    if not math.isfinite(value) or not 0.05 <= value <= 20:
        raise ValueError(raw)
    return value


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [dict(r) for r in reader]
            return list(reader.fieldnames or []), rows
    except FileNotFoundError:
        raise ConfigError(f"{path}: manifest not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read manifest CSV ({str(exc).splitlines()[0]})") from None


def validate_manifest(
    path: Path | str, classes: list[str] | tuple[str, ...] | None = None, *,
    require_two_classes: bool = True, check_files: bool = True,
) -> TrainManifest:
    """Read ``path`` and check it; one ``ConfigError`` listing every problem.

    ``classes`` restricts allowed labels (None: any label, the manifest defines
    the classes). Class names returned are ``classes`` when given, else the
    sorted labels present.
    """
    path = Path(path)
    columns, rows = _read_rows(path)
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing_cols:
        raise ConfigError(f"{path}: manifest lacks column(s) {', '.join(missing_cols)} "
                          f"(has: {', '.join(columns) or 'none'})")
    if not rows:
        raise ConfigError(f"{path}: manifest has no slides")
    base = path.resolve().parent
    has_ann = "annotations" in columns
    problems: list[str] = []
    slides: list[TrainSlide] = []
    seen_ids: dict[str, int] = {}
    patient_labels: dict[str, set[str]] = defaultdict(set)
    allowed = set(classes) if classes is not None else None
    for line, row in enumerate(rows, start=2):
        where = f"line {line}"
        fields = {k: (row.get(k) or "").strip() for k in REQUIRED_COLUMNS}
        empty = [k for k, v in fields.items() if not v]
        if empty:
            problems.append(f"{where}: empty {', '.join(empty)}")
            continue
        slide_id = sanitize_slide_id(fields["slide_id"])
        if slide_id in seen_ids:
            problems.append(f"{where}: duplicate slide id '{fields['slide_id']}' "
                            f"(first on line {seen_ids[slide_id]})")
            continue
        seen_ids[slide_id] = line
        slide_path = _resolve(fields["path"], base)
        if check_files and not slide_path.is_file():
            problems.append(f"{where}: slide file not found: {slide_path}")
        label = fields["label"]
        if allowed is not None and label not in allowed:
            problems.append(f"{where}: unknown label '{label}' (expected one of: "
                            f"{', '.join(sorted(allowed))})")
        if label == "non_tumour":
            problems.append(f"{where}: label 'non_tumour' is reserved for tile labels")
        patient_labels[fields["patient_id"]].add(label)
        ann_path = None
        ann_raw = (row.get("annotations") or "").strip() if has_ann else ""
        if ann_raw:
            ann_path = _resolve(ann_raw, base)
            if check_files and not ann_path.is_file():
                problems.append(f"{where}: annotation file not found: {ann_path}")
        try:
            mpp = _parse_mpp(row.get("mpp") or "")
        except ValueError:
            problems.append(f"{where}: mpp '{row.get('mpp')}' is not a number in 0.05..20")
            mpp = None
        slides.append(TrainSlide(slide_id, fields["patient_id"], slide_path, label, ann_path, mpp))
    for patient, labels in sorted(patient_labels.items()):
        if len(labels) > 1:
            problems.append(f"patient '{patient}' has slides with different labels "
                            f"({', '.join(sorted(labels))})")
    present = sorted({s.label for s in slides})
    if require_two_classes and len(present) < 2:
        problems.append(f"only one class present ({', '.join(present) or 'none'}); "
                        "training needs at least two")
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        tail = f"; ... and {more} more" if more > 0 else ""
        raise ConfigError(f"{path}: {len(problems)} manifest problem(s): " + "; ".join(shown) + tail)
    class_names = tuple(classes) if classes is not None else tuple(present)
    with_ann = any(s.annotations is not None for s in slides)
    return TrainManifest(path, tuple(slides), class_names, with_ann)
