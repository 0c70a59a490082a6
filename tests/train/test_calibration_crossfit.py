"""Cross-fitting for calibration: patient-grouped folds and honest out-of-fold logits."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from histo_net.metrics import auroc
from histo_net.train.crossfit import cross_fit_logits, patient_folds
from histo_net.train.mil import predict_bags, train_mil

MIL = {"hidden_dim": 16, "attn_dim": 8, "dropout": 0.0}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny MIL models run ~10x faster on one intra-op thread (no spinning on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_folds_keep_patients_together_and_spread_labels() -> None:
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    groups = ["a", "a", "b", "c", "d", "e", "f", "f", "g", "h", "i", "j"]
    folds = patient_folds(labels, groups, k=3, seed=0)
    for g in set(groups):
        assert len({folds[i] for i, x in enumerate(groups) if x == g}) == 1
    for f in range(3):
        members = [labels[i] for i in range(12) if folds[i] == f]
        assert 0 in members and 1 in members
    assert np.array_equal(folds, patient_folds(labels, groups, k=3, seed=0))


def _bags(labels: np.ndarray, seed: int, signal: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    bags = []
    for y in labels:
        x = torch.randn(12, 6, generator=g)
        x[:4, 0] += signal * (1 if y else -1)
        bags.append(x)
    return bags


def test_out_of_fold_logits_do_not_leak_labels() -> None:
    """On pure noise a head scores its own training bags well, but out-of-fold logits do not."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat([0, 1], 12))
    bags = _bags(labels, 1, signal=0.0)
    groups = [f"p{i}" for i in range(len(labels))]
    kwargs = {"num_classes": 2, "mil_kwargs": MIL, "lr": 2e-2, "weight_decay": 0.0, "max_bag_size": 64,
              "class_weighted": True, "seed": 0, "device": torch.device("cpu")}
    oof = cross_fit_logits(bags, labels.tolist(), groups, folds=3, epochs=20, **kwargs)
    model, _ = train_mil(bags, labels.tolist(), bags, labels.tolist(), num_classes=2, mil_kwargs=MIL,
                         epochs=20, lr=2e-2, weight_decay=0.0, patience=20, seed=0)
    in_sample, _ = predict_bags(model, bags, device=torch.device("cpu"))
    score = lambda z: auroc(labels, z[:, 1] - z[:, 0])
    assert score(in_sample) > 0.8  # memorised
    assert 0.2 < score(oof) < 0.8  # honest: chance level


def test_out_of_fold_logits_keep_real_signal() -> None:
    labels = np.repeat([0, 1], 10)
    bags = _bags(labels, 2, signal=3.0)
    oof = cross_fit_logits(bags, labels.tolist(), [f"p{i // 2}" for i in range(20)], num_classes=2, folds=4,
                           epochs=8, seed=0, device=torch.device("cpu"), mil_kwargs=MIL, lr=5e-3,
                           weight_decay=0.0, max_bag_size=64, class_weighted=True)
    assert oof.shape == (20, 2) and np.isfinite(oof).all()
    assert auroc(labels, oof[:, 1] - oof[:, 0]) > 0.9
