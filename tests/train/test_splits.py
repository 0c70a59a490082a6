"""Patient-level stratified splits: no patient spans two splits, every class in every split."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from histo_net.train.splits import (
    patient_splits,
    read_splits_csv,
    slide_splits,
    write_splits_csv,
)
from histo_net.wsi.inputs import SlideSpec


def _slides(n_patients: int = 20) -> list[SlideSpec]:
    slides = []
    for p in range(n_patients):
        label = "neuroendocrine" if p % 2 else "other_small_round_cell"
        for k in range(1 + p % 3):  # patients with 1-3 slides
            slides.append(SlideSpec(f"s{p}_{k}", Path(f"/x/{p}_{k}.svs"), patient_id=f"p{p}", label=label))
    return slides


@pytest.mark.parametrize("k_folds", [None, 4])
def test_no_patient_spans_two_splits(tmp_path: Path, k_folds: int | None) -> None:
    slides = _slides()
    by_patient = patient_splits(slides, val_fraction=0.2, test_fraction=0.25, seed=3, k_folds=k_folds)
    by_slide = slide_splits(slides, by_patient)
    write_splits_csv(tmp_path / "splits.csv", slides, by_slide)
    reread = read_splits_csv(tmp_path / "splits.csv")
    assert reread == by_slide
    seen: dict[str, set[str]] = defaultdict(set)
    for s in slides:
        seen[s.patient_id].add(reread[s.slide_id])
    assert all(len(v) == 1 for v in seen.values())
    for split in ("train", "val", "test"):
        labels = {s.label for s in slides if reread[s.slide_id] == split}
        assert labels == {"neuroendocrine", "other_small_round_cell"}, split


def test_splits_deterministic_and_seed_dependent() -> None:
    slides = _slides(40)
    a = patient_splits(slides, val_fraction=0.2, test_fraction=0.2, seed=1)
    b = patient_splits(slides, val_fraction=0.2, test_fraction=0.2, seed=1)
    c = patient_splits(slides, val_fraction=0.2, test_fraction=0.2, seed=2)
    assert a == b and a != c
    assert sum(v == "test" for v in a.values()) == 8


def test_k_folds_cover_every_patient_once() -> None:
    slides = _slides(12)
    tests = set()
    for fold in range(3):
        split = patient_splits(slides, val_fraction=0.2, test_fraction=0.2, seed=0, k_folds=3, fold=fold)
        fold_test = {p for p, s in split.items() if s == "test"}
        assert not tests & fold_test
        tests |= fold_test
    assert tests == {s.patient_id for s in slides}
