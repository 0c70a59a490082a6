"""Whole-bundle validation at load: one clear message per inconsistent bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from histo_net.errors import ModelBundleError
from histo_net.models.bundle import load_bundle, save_bundle
from histo_net.models.bundle_check import bundle_problems, check_bundle
from histo_net.models.untrained import untrained_bundle


@pytest.fixture(scope="module")
def good():
    return untrained_bundle(backbone="resnet18", tile_size_px=64, target_mpp=1.0)


def test_a_consistent_bundle_passes(good) -> None:
    assert bundle_problems(good) == []


@pytest.mark.parametrize(("change", "words"), [
    ({"class_names": ["neuroendocrine", "other_small_round_cell", "lymphoma"]}, "MIL model has 2"),
    ({"positive_class": "melanoma"}, "positive_class 'melanoma' is not one of"),
    ({"indeterminate_band": (0.6, 0.4)}, "must satisfy 0 <= low <= high <= 1"),
    ({"indeterminate_band": (0.6, 0.7)}, "does not contain the threshold 0.5"),
    ({"threshold": 1.5}, "threshold must be a probability"),
    ({"temperature": 0.0}, "temperature must be a positive number"),
    ({"tile_size_px": 0}, "tile_size_px must be a positive integer"),
    ({"target_mpp": 80.0}, "target_mpp must be"),
    ({"tile_class_names": ["non_tumour", "a"]}, "tile classifier has 3 outputs"),
    ({"training_config": {"tiling": {"stride_px": -3}}}, "tile spec / training tiling settings"),
    ({"subtype_names": ["a", "b", "c"], "subtype_groups": [0, 1, 1]}, "3 subtype_names but the MIL model has 2"),
    ({"subtype_names": ["a", "b"], "subtype_groups": [0, 0]}, "leave a class of"),
    ({"subtype_names": ["a", "b"], "subtype_groups": [0]}, "must give one class index"),
])
def test_each_inconsistency_is_named(good, tmp_path: Path, change: dict, words: str) -> None:
    bad = dataclasses.replace(good, **change)
    path = tmp_path / "model.pt"
    save_bundle(path, bad)
    with pytest.raises(ModelBundleError) as info:
        load_bundle(path)
    message = str(info.value)
    assert words in message and str(path) in message and "\n" not in message


def test_all_problems_in_one_message_and_new_optional_fields_tolerated(good) -> None:
    bad = dataclasses.replace(good, positive_class="x", threshold=float("nan"))
    with pytest.raises(ModelBundleError, match="positive_class.*; threshold"):
        check_bundle(bad, "b.pt")

    @dataclasses.dataclass
    class Extended(type(good)):  # another engineer's new optional field
        outcome_thresholds: dict = dataclasses.field(default_factory=dict)

    fields = {f.name: getattr(good, f.name) for f in dataclasses.fields(good)}
    assert bundle_problems(Extended(**fields)) == []


def test_bad_normalisation_is_caught(good) -> None:
    state = dict(good.encoder_state)
    state["std"] = torch.zeros_like(state["std"])
    assert any("std must be > 0" in p for p in bundle_problems(dataclasses.replace(good, encoder_state=state)))
