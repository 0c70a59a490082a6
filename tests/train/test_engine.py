"""Training engine: learning, AMP path, non-finite loss, checkpoints and resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from histo_net.errors import ModelBundleError, NonFiniteLossError
from histo_net.models.checkpoint import load_checkpoint, save_checkpoint
from histo_net.train.engine import FitConfig, FitResult, evaluate, fit, train_one_epoch

CPU = torch.device("cpu")


class TinyNet(nn.Module):
    """uint8 (B,3,H,W) -> (B,2) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x.float() / 255.0)).mean(dim=(2, 3)))


def _dataset(n: int, seed: int) -> TensorDataset:
    """Class 1 tiles are redder: separable with one conv."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    images = torch.randint(0, 120, (n, 3, 16, 16), generator=gen, dtype=torch.uint8)
    images[labels == 1, 0] += 100
    return TensorDataset(images, labels)


def _loaders() -> tuple[DataLoader, DataLoader]:
    train = DataLoader(_dataset(64, 0), batch_size=16, shuffle=True, num_workers=0)
    val = DataLoader(_dataset(32, 1), batch_size=16, num_workers=0)
    return train, val


class _Interrupt(Exception):
    pass


def _fit(
    tmp: Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    amp: bool = False,
    epochs: int = 4,
    tensorboard: bool = False,
) -> FitResult | None:
    torch.manual_seed(0)
    model = TinyNet()
    train, val = _loaders()

    def on_epoch_end(epoch: int, record: dict[str, float]) -> None:
        if stop_after is not None and epoch == stop_after:
            raise _Interrupt

    try:
        return fit(
            model,
            train,
            val,
            FitConfig(epochs=epochs, lr=1e-2, weight_decay=1e-4, amp=amp, patience=10),
            device=CPU,
            checkpoint_path=tmp / "ckpt.pt",
            resume=resume,
            log_csv=tmp / "log.csv",
            tensorboard_dir=tmp / "tb" if tensorboard else None,
            on_epoch_end=on_epoch_end,
            progress=False,
        )
    except _Interrupt:
        return None


def test_tiny_model_learns(tmp_path: Path) -> None:
    result = _fit(tmp_path, epochs=6, tensorboard=True)
    assert result is not None
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.history[result.best_epoch]["val_auroc"] > 0.9
    model = TinyNet()
    model.load_state_dict(result.best_state_dict)
    out = evaluate(model, _loaders()[1], device=CPU, amp=False)
    assert out.logits.shape == (32, 2) and out.labels.shape == (32,)
    with open(tmp_path / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and "val_auroc" in rows[0]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_amp_path_runs() -> None:
    torch.manual_seed(0)
    model = TinyNet()
    train, val = _loaders()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    stats = train_one_epoch(model, train, opt, device=CPU, amp=True, progress=False)
    assert torch.isfinite(torch.tensor(stats["loss"])) and stats["items_per_s"] > 0
    out = evaluate(model, val, device=CPU, amp=True)
    assert out.logits.dtype.name == "float32"


def test_non_finite_loss_raises() -> None:
    model = TinyNet()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match="epoch 3 step 0"):
        train_one_epoch(model, _loaders()[0], opt, device=CPU, amp=False, epoch=3, progress=False)


def test_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full = _fit(tmp_path / "a")
    assert _fit(tmp_path / "b", stop_after=1) is None
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["epoch"] == 1
    resumed = _fit(tmp_path / "b", resume=True)
    assert full is not None and resumed is not None
    assert len(resumed.history) == len(full.history) == 4
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["epoch"] == 3
    assert resumed.best_epoch == full.best_epoch
    for key, value in full.best_state_dict.items():
        assert torch.equal(value, resumed.best_state_dict[key]), key


class Payload:
    """An arbitrary class: pickling it must make the checkpoint unloadable."""


def test_checkpoint_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"model": {}, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ModelBundleError, match="refusing to load pickled objects"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelBundleError, match="junk.pt: corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "ok.pt", {"w": torch.ones(2), "meta": {"epoch": 3, "names": ["a"]}})
    assert load_checkpoint(tmp_path / "ok.pt")["meta"]["epoch"] == 3
    assert not list(tmp_path.glob(".ok.pt.*"))  # no temp files left behind


def test_rng_state_survives_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    from histo_net.models.checkpoint import capture_rng_state, restore_rng_state

    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    first = (torch.rand(2), np.random.rand(), random.random())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
