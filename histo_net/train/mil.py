"""MIL training on feature bags through the one training loop (:func:`histo_net.train.engine.fit`).

Bags are float tensors ``(N_i, D)`` (one per slide). Training draws a random subset of at
most ``max_bag_size`` tiles per bag and epoch, pads mini-batches with masks and weights
classes; validation and prediction use whole bags, one slide per forward.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from histo_net.models.mil import GatedAttentionMIL, pad_bags
from histo_net.train.engine import FitConfig, FitResult, fit

logger = logging.getLogger(__name__)


def class_weights_from_labels(labels: Sequence[int], num_classes: int) -> Tensor:
    """Inverse-frequency weights ``(C,)`` float32, mean 1 over present classes; absent get 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = max(1, int((counts > 0).sum()))
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / present, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


class BagDataset(Dataset):
    """Item ``i`` -> ((N_i',D) float32 bag, int label); training draws <= ``max_tiles`` tiles.

    The draw is seeded by ``(seed, epoch, i)`` (the engine calls :meth:`set_epoch`), so a
    resumed run sees the same bags as an uninterrupted one.
    """

    def __init__(self, bags: Sequence[Tensor], labels: Sequence[int], *,
                 max_tiles: int | None = None, seed: int = 0) -> None:
        if len(bags) != len(labels):
            raise ValueError(f"{len(bags)} bags for {len(labels)} labels")
        self.bags = [torch.as_tensor(b, dtype=torch.float32) for b in bags]
        self.labels = [int(v) for v in labels]
        self.max_tiles = max_tiles
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed the tile draws for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        bag = self.bags[index]
        n = int(bag.shape[0])
        if self.max_tiles is not None and n > self.max_tiles:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + index)
            bag = bag[torch.randperm(n, generator=gen)[: self.max_tiles]]
        return bag, self.labels[index]


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(n)`` seeded by ``(seed, epoch)``, so resuming repeats the order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


def collate_bags(batch: list[tuple[Tensor, int]]) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """Pad -> ((bags (B,Nmax,D) float32, mask (B,Nmax) bool), labels (B,) int64)."""
    bags, mask = pad_bags([item[0] for item in batch])
    return (bags, mask), torch.tensor([item[1] for item in batch], dtype=torch.int64)


def bag_loader(bags: Sequence[Tensor], labels: Sequence[int], *, batch_size: int,
               max_tiles: int | None, shuffle: bool, seed: int) -> DataLoader:
    """A DataLoader of padded bag batches (in-memory features, no workers)."""
    dataset = BagDataset(bags, labels, max_tiles=max_tiles, seed=seed)
    sampler = EpochShuffle(len(dataset), seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_bags,
                      num_workers=0)


@torch.no_grad()
def predict_bags(model: GatedAttentionMIL, bags: Sequence[Tensor], *,
                 device: torch.device) -> tuple[np.ndarray, list[np.ndarray]]:
    """Whole-bag prediction, one slide per forward, in eval mode.

    Returns logits ``(S,C)`` float32 and per-bag attention ``(N_i,)`` float32 (one pass).
    """
    was_training = model.training
    model.eval()
    logits_out: list[np.ndarray] = []
    attn_out: list[np.ndarray] = []
    for bag in bags:
        x = torch.as_tensor(bag, dtype=torch.float32).to(device).unsqueeze(0)  # (1,N,D)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=device)  # (1,N)
        logits, attn = model.forward_with_attention(x, mask)  # (1,C), (1,N)
        logits_out.append(logits[0].float().cpu().numpy())
        attn_out.append(attn[0].float().cpu().numpy())
    model.train(was_training)
    stacked = (np.stack(logits_out).astype(np.float32) if logits_out
               else np.zeros((0, model.num_classes), np.float32))
    return stacked, attn_out


def train_mil(
    train_bags: Sequence[Tensor], train_labels: Sequence[int],
    val_bags: Sequence[Tensor], val_labels: Sequence[int], *,
    num_classes: int, mil_kwargs: dict[str, Any], epochs: int = 50, lr: float = 2e-4,
    weight_decay: float = 1e-4, max_bag_size: int = 512, class_weighted: bool = True,
    patience: int = 10, seed: int = 0, device: torch.device | None = None, batch_size: int = 4,
    amp: bool = False, checkpoint_path: Path | None = None, resume: bool = False,
    log_csv: Path | None = None, progress: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[GatedAttentionMIL, list[dict[str, float]]]:
    """Train :class:`GatedAttentionMIL` with :func:`fit`; returns the best model (eval) and history.

    ``mil_kwargs`` are extra constructor arguments (hidden_dim, attn_dim, dropout); ``in_dim``
    comes from the bags. Checkpoints go to ``checkpoint_path`` (a temporary file when None)
    and ``resume`` continues from it. Deterministic for a given ``seed`` on CPU.
    """
    if not train_bags:
        raise ValueError("train_mil needs at least one training bag")
    device = device or torch.device("cpu")
    kwargs = {**mil_kwargs, "in_dim": int(train_bags[0].shape[1]), "num_classes": num_classes}
    weights = class_weights_from_labels(train_labels, num_classes) if class_weighted else None
    cfg = FitConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, amp=amp, patience=patience,
                    class_weights=weights, all_ranks=False)  # MIL runs on one rank only
    train_loader = bag_loader(train_bags, train_labels, batch_size=batch_size,
                              max_tiles=max_bag_size, shuffle=True, seed=seed)
    val_loader = bag_loader(val_bags, val_labels, batch_size=1, max_tiles=None, shuffle=False,
                            seed=seed)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = GatedAttentionMIL(**kwargs).to(device)
        result = _fit_with_checkpoint(model, train_loader, val_loader, cfg, device=device,
                                      checkpoint_path=checkpoint_path, resume=resume,
                                      log_csv=log_csv, progress=progress, on_epoch_end=on_epoch_end)
    model.load_state_dict(result.best_state_dict)
    return model.eval(), result.history


def _fit_with_checkpoint(model: GatedAttentionMIL, train_loader: DataLoader, val_loader: DataLoader,
                         cfg: FitConfig, *, device: torch.device, checkpoint_path: Path | None,
                         resume: bool, log_csv: Path | None, progress: bool,
                         on_epoch_end: Callable[[int, dict[str, float]], None] | None) -> FitResult:
    common: dict[str, Any] = {"device": device, "log_csv": log_csv, "progress": progress,
                              "on_epoch_end": on_epoch_end}
    if checkpoint_path is not None:
        return fit(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path,
                   resume=resume, **common)
    with tempfile.TemporaryDirectory(prefix="histo-net-mil-") as tmp:
        return fit(model, train_loader, val_loader, cfg, checkpoint_path=Path(tmp) / "mil_last.pt",
                   **common)
