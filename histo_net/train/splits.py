"""Patient-level, label-stratified train / val / test splits (or k folds).

Every slide of a patient lands in the same split. Written to ``RUN/splits.csv``
(``slide_id,patient_id,label,split``).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from histo_net.errors import ConfigError
from histo_net.io_utils import atomic_write_text
from histo_net.wsi.inputs import SlideSpec

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _patients_by_label(slides: list[SlideSpec] | tuple[SlideSpec, ...]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for s in slides:
        out[s.label].add(s.patient_id)
    return {label: sorted(p) for label, p in sorted(out.items())}


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) patients for one class of ``n`` patients; train keeps >= 1."""
    if n >= 3:
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
        while n_val + n_test > n - 1:
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        return n_val, n_test
    if n == 2:
        return 0, 1 if test_fraction > 0 else 0
    return 0, 0


def patient_splits(
    slides: list[SlideSpec] | tuple[SlideSpec, ...], *, val_fraction: float,
    test_fraction: float, seed: int, k_folds: int | None = None, fold: int = 0,
) -> dict[str, str]:
    """Patient id -> "train" | "val" | "test", stratified by label, deterministic by ``seed``.

    With ``k_folds``: patients of each label are dealt round-robin into k folds;
    fold ``fold`` is test, fold ``fold+1`` validation, the rest train.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for label, patients in _patients_by_label(slides).items():
        order = [patients[i] for i in rng.permutation(len(patients))]
        if k_folds:
            if not 0 <= fold < k_folds:
                raise ConfigError(f"split.fold={fold}: must be in 0..{k_folds - 1}")
            for i, pid in enumerate(order):
                f = i % k_folds
                out[pid] = "test" if f == fold else "val" if f == (fold + 1) % k_folds else "train"
            continue
        n_val, n_test = _counts(len(order), val_fraction, test_fraction)
        for i, pid in enumerate(order):
            out[pid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        if n_val == 0 or n_test == 0:
            logger.warning("label '%s' has only %d patient(s); it is missing from some splits",
                           label, len(order))
    return out


def slide_splits(slides: list[SlideSpec] | tuple[SlideSpec, ...],
                 patient_split: dict[str, str]) -> dict[str, str]:
    """Slide id -> split, from the patient assignment."""
    return {s.slide_id: patient_split[s.patient_id] for s in slides}


def splits_csv_text(slides: list[SlideSpec] | tuple[SlideSpec, ...],
                    split_by_slide: dict[str, str]) -> str:
    """CSV text ``slide_id,patient_id,label,split``, one row per slide in manifest order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["slide_id", "patient_id", "label", "split"])
    for s in slides:
        writer.writerow([s.slide_id, s.patient_id, s.label, split_by_slide[s.slide_id]])
    return buf.getvalue()


def write_splits_csv(path: Path, slides: list[SlideSpec] | tuple[SlideSpec, ...],
                     split_by_slide: dict[str, str]) -> None:
    """Atomically write ``splits.csv``."""
    atomic_write_text(path, splits_csv_text(slides, split_by_slide))


def read_splits_csv(path: Path) -> dict[str, str]:
    """Slide id -> split from a ``splits.csv``; ``ConfigError`` when malformed."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read splits ({exc})") from None
    out: dict[str, str] = {}
    for row in rows:
        split = (row.get("split") or "").strip()
        if split not in SPLITS or not row.get("slide_id"):
            raise ConfigError(f"{path}: bad row {row}")
        out[row["slide_id"]] = split
    return out
