"""Gated attention MIL: masks, attention, and training over feature bags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histo_net.metrics import auroc
from histo_net.models.mil import GatedAttentionMIL, pad_bags
from histo_net.train.mil import class_weights_from_labels, predict_bags, train_mil


def _model() -> GatedAttentionMIL:
    torch.manual_seed(0)
    return GatedAttentionMIL(in_dim=8, num_classes=3, hidden_dim=16, attn_dim=8).eval()


def test_padding_invariance_and_attention() -> None:
    model = _model()
    bag = torch.randn(1, 5, 8)
    padded = torch.cat([bag, torch.full((1, 4, 8), float("nan"))], dim=1)  # garbage padding
    mask = torch.tensor([[True] * 5 + [False] * 4])
    logits_a, attn_a = model.forward_with_attention(bag, torch.ones(1, 5, dtype=torch.bool))
    logits_b, attn_b = model.forward_with_attention(padded, mask)
    torch.testing.assert_close(logits_a, logits_b)
    torch.testing.assert_close(attn_a, attn_b[:, :5])
    assert torch.all(attn_b[:, 5:] == 0)
    assert torch.allclose(attn_b.sum(1), torch.ones(1))


def test_forward_with_attention_matches_separate_calls_batched() -> None:
    model = _model()
    x, mask = pad_bags([torch.randn(3, 8), torch.randn(7, 8)])
    logits, attn = model.forward_with_attention(x, mask)
    torch.testing.assert_close(logits, model(x, mask))
    torch.testing.assert_close(attn, model.attention(x, mask))
    assert logits.shape == (2, 3) and attn.shape == (2, 7)
    torch.testing.assert_close(attn.sum(1), torch.ones(2))
    assert torch.all(attn[0, 3:] == 0) and torch.all(attn[0, :3] > 0)


def test_empty_bag_rejected() -> None:
    with pytest.raises(ValueError, match="at least one real tile"):
        _model()(torch.randn(1, 2, 8), torch.zeros(1, 2, dtype=torch.bool))


def _bags(n: int, gen: torch.Generator) -> tuple[list[torch.Tensor], list[int]]:
    bags, labels = [], []
    for i in range(n):
        label = i % 2
        size = int(torch.randint(20, 80, (1,), generator=gen))
        bag = torch.randn(size, 16, generator=gen)
        if label:
            bag[: size // 5, 0] += 4.0  # a minority of "tumour" tiles carry the signal
        bags.append(bag)
        labels.append(label)
    return bags, labels


def test_train_mil_learns_and_attends_to_signal() -> None:
    gen = torch.Generator().manual_seed(0)
    train_bags, train_y = _bags(32, gen)
    val_bags, val_y = _bags(16, gen)
    kwargs = {"hidden_dim": 32, "attn_dim": 16, "dropout": 0.1}
    model, history = train_mil(
        train_bags,
        train_y,
        val_bags,
        val_y,
        num_classes=2,
        mil_kwargs=kwargs,
        epochs=25,
        lr=2e-3,
        max_bag_size=32,
        patience=25,
        seed=1,
    )
    logits, attn = predict_bags(model, val_bags, device=torch.device("cpu"))
    assert logits.shape == (16, 2) and [a.shape[0] for a in attn] == [b.shape[0] for b in val_bags]
    assert auroc(np.array(val_y), logits[:, 1] - logits[:, 0]) > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    positive = [i for i, y in enumerate(val_y) if y == 1]
    signal_share = np.mean([attn[i][: val_bags[i].shape[0] // 5].sum() for i in positive])
    assert signal_share > 0.5  # signal tiles are 20% of the bag
    assert model.init_kwargs["in_dim"] == 16
    short = [
        train_mil(
            train_bags[:8],
            train_y[:8],
            val_bags,
            val_y,
            num_classes=2,
            mil_kwargs=kwargs,
            epochs=3,
            max_bag_size=16,
            seed=5,
        )[1]
        for _ in range(2)
    ]
    losses = [[(h["train_loss"], h["val_loss"]) for h in run] for run in short]
    assert losses[0] == losses[1]  # deterministic for a seed


def test_class_weights() -> None:
    w = class_weights_from_labels([0, 0, 0, 1], 3)
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0])


class _Stop(Exception):
    pass


def test_mil_training_resumes_from_its_checkpoint(tmp_path) -> None:
    """MIL goes through the one training loop: an interrupted run resumes to the same result."""
    gen = torch.Generator().manual_seed(3)
    train_bags, train_y = _bags(12, gen)
    val_bags, val_y = _bags(6, gen)
    kwargs = {"num_classes": 2, "mil_kwargs": {"hidden_dim": 16, "attn_dim": 8}, "epochs": 4,
              "max_bag_size": 16, "patience": 10, "seed": 2}
    _, full = train_mil(train_bags, train_y, val_bags, val_y, checkpoint_path=tmp_path / "a.pt", **kwargs)

    def stop_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train_mil(train_bags, train_y, val_bags, val_y, checkpoint_path=tmp_path / "b.pt",
                  on_epoch_end=stop_after_first, **kwargs)
    _, resumed = train_mil(train_bags, train_y, val_bags, val_y, checkpoint_path=tmp_path / "b.pt",
                               resume=True, **kwargs)
    assert [h["train_loss"] for h in resumed] == [h["train_loss"] for h in full]
    assert [h["val_loss"] for h in resumed] == [h["val_loss"] for h in full]
