"""Training engine in the torchvision-references style: ``train_one_epoch``, ``evaluate``, ``fit``.

Batches are ``(images uint8 (B,3,H,W), labels int64 (B,))``; models normalise
inside. Mixed precision goes through :func:`histo_net.device.autocast` and a
``GradScaler`` that is a no-op unless fp16 is in use: one code path, no
``if amp:`` branches.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from histo_net.device import autocast, make_grad_scaler
from histo_net.errors import HistoNetError
from histo_net.io_utils import atomic_write_text
from histo_net.metrics import auroc, balanced_accuracy
from histo_net.models.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


class NonFiniteLossError(HistoNetError, FloatingPointError):
    """The training loss became NaN or infinite (learning rate too high, bad input, overflow)."""

    kind = "non_finite_loss"


@dataclass
class FitResult:
    """Outcome of :func:`fit`: best weights (of the unwrapped model), their epoch, the history."""

    best_state_dict: dict[str, Tensor]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel``, else ``model``."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in channels_last (do this before wrapping in DDP)."""
    return model.to(device=device, memory_format=torch.channels_last)


def _to_device(images: Tensor, labels: Tensor, device: torch.device) -> Batch:
    """Images to ``device`` in channels_last (dtype kept), labels to int64 on ``device``."""
    non_blocking = device.type == "cuda"
    images = images.to(device, non_blocking=non_blocking).contiguous(
        memory_format=torch.channels_last
    )
    return images, labels.to(device, dtype=torch.int64, non_blocking=non_blocking)


def _progress(loader: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = True,
    class_weights: Tensor | None = None,
    epoch: int = 0,
    progress: bool = True,
    max_grad_norm: float | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; ``scheduler`` (if any) steps every iteration.

    Returns ``loss`` (mean cross-entropy per tile), ``acc``, ``tiles_per_s`` (all summed over
    ranks under torch.distributed), ``lr``.
    Raises :class:`NonFiniteLossError` on a NaN/inf loss.
    """
    model.train()
    scaler = scaler if scaler is not None else make_grad_scaler(device, amp)
    weight = (
        class_weights.to(device=device, dtype=torch.float32) if class_weights is not None else None
    )
    criterion = nn.CrossEntropyLoss(weight=weight)
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for step, (images, labels) in enumerate(_progress(loader, progress, f"train {epoch}")):
        images, labels = _to_device(images, labels, device)
        with autocast(device, amp):
            logits = model(images)  # (B,C)
        loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"epoch {epoch} step {step}: training loss is {loss.item()} "
                "(lower the learning rate or check inputs)"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if max_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        batch = int(labels.shape[0])
        loss_sum += float(loss.detach()) * batch
        correct += int((logits.detach().argmax(dim=1) == labels).sum())
        seen += batch
    elapsed = max(time.perf_counter() - start, 1e-9)
    loss_sum, correct, seen = _sum_across_ranks([loss_sum, float(correct), float(seen)], device)
    return {
        "loss": loss_sum / max(seen, 1),
        "acc": correct / max(seen, 1),
        "tiles_per_s": seen / elapsed,
        "lr": float(optimizer.param_groups[0]["lr"]),
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    device: torch.device,
    amp: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict every batch of ``loader`` with the unwrapped model in eval mode.

    Returns ``loss`` (mean cross-entropy, float), ``acc``, ``logits`` np (N,C)
    float32 and ``labels`` np (N,) int64.
    """
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    all_logits: list[Tensor] = []
    all_labels: list[Tensor] = []
    for images, labels in _progress(loader, progress, "eval"):
        images, labels = _to_device(images, labels, device)
        with autocast(device, amp):
            logits = net(images)  # (B,C)
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu())
    net.train(was_training)
    if not all_logits:
        return {
            "loss": float("nan"),
            "acc": float("nan"),
            "logits": np.zeros((0, 0), np.float32),
            "labels": np.zeros((0,), np.int64),
        }
    logits_t = torch.cat(all_logits)  # (N,C)
    labels_t = torch.cat(all_labels)  # (N,)
    loss = float(nn.functional.cross_entropy(logits_t, labels_t))
    return {
        "loss": loss,
        "acc": float((logits_t.argmax(1) == labels_t).float().mean()),
        "logits": logits_t.numpy().astype(np.float32),
        "labels": labels_t.numpy().astype(np.int64),
    }


def validation_scores(result: dict[str, Any]) -> dict[str, float]:
    """``val_loss/acc/bal_acc/auroc`` (macro OvR AUROC on softmax) from :func:`evaluate`."""
    logits = result["logits"]
    labels = result["labels"]
    if logits.size == 0:
        return {
            "val_loss": float("nan"),
            "val_acc": float("nan"),
            "val_bal_acc": float("nan"),
            "val_auroc": float("nan"),
        }
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    return {
        "val_loss": float(result["loss"]),
        "val_acc": float(result["acc"]),
        "val_bal_acc": balanced_accuracy(labels, probs.argmax(1)),
        "val_auroc": auroc(labels, probs),
    }


def _score(record: dict[str, float]) -> tuple[float, float]:
    """Early-stopping key: validation AUROC, then lower loss (nan-safe, larger is better)."""
    auc = record["val_auroc"]
    loss = record["val_loss"]
    return (auc if math.isfinite(auc) else -math.inf, -loss if math.isfinite(loss) else -math.inf)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration linear warmup then cosine decay to 0 over ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Rewrite the whole CSV log from ``history`` atomically (consistent with the checkpoint)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _collective_device(device: torch.device) -> torch.device:
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def _sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks (identity without torch.distributed)."""
    if not _distributed():
        return values
    total = torch.tensor(values, dtype=torch.float64, device=_collective_device(device))
    torch.distributed.all_reduce(total)
    return [float(v) for v in total.cpu()]


def _broadcast_stop(stop: bool, device: torch.device) -> bool:
    """Rank 0's early-stopping decision on every rank (no-op without torch.distributed)."""
    if not _distributed():
        return stop
    flag = torch.tensor([1 if stop else 0], device=_collective_device(device))
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _set_epoch(loader: Any, epoch: int) -> None:
    for holder in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if holder is not None and hasattr(holder, "set_epoch"):
            holder.set_epoch(epoch)
        inner = getattr(holder, "sampler", None)
        if inner is not None and inner is not holder and hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    device: torch.device,
    amp: bool,
    patience: int,
    checkpoint_path: Path,
    resume: bool,
    log_csv: Path | None,
    tensorboard_dir: Path | None,
    is_main_process: bool = True,
    class_weights: Tensor | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
    warmup_epochs: int = 0,
    max_grad_norm: float | None = None,
    steps_per_epoch: int | None = None,
) -> FitResult:
    """Train with AdamW + per-iteration cosine schedule and early stopping on validation.

    ``model`` must already be on ``device`` (see :func:`prepare_model`), possibly
    wrapped in DDP. Best = highest macro OvR validation AUROC, ties broken by
    lower validation loss; training stops after ``patience`` epochs without
    improvement. A checkpoint (model/optimizer/scheduler/scaler/epoch/best/
    history/RNG) is written atomically after every epoch on the main process;
    ``resume=True`` continues from it when it exists. ``on_epoch_end(epoch,
    record)`` runs after the checkpoint is written. ``steps_per_epoch`` defaults
    to ``len(train_loader)`` (pass it for loaders without a length).
    """
    net = unwrap_model(model)
    checkpoint_path = Path(checkpoint_path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, steps_per_epoch or len(train_loader))
    scheduler = cosine_schedule(
        optimizer, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    )
    scaler = make_grad_scaler(device, amp)
    history: list[dict[str, float]] = []
    best_state: dict[str, Tensor] = {
        k: v.detach().cpu().clone() for k, v in net.state_dict().items()
    }
    best_epoch, bad_epochs, start_epoch = -1, 0, 0
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    if resume and checkpoint_path.is_file():
        ckpt = load_checkpoint(checkpoint_path, map_location="cpu")
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        best_state, best_epoch, bad_epochs = (
            ckpt["best_model"],
            int(ckpt["best_epoch"]),
            int(ckpt["bad_epochs"]),
        )
        best_key = (float(ckpt["best_key"][0]), float(ckpt["best_key"][1]))
        start_epoch = int(ckpt["epoch"]) + 1
        restore_rng_state(ckpt["rng"])
        logger.info("resumed from %s at epoch %d", checkpoint_path, start_epoch)
    writer = None
    if tensorboard_dir is not None and is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(tensorboard_dir), purge_step=start_epoch)
    stop = bool(history) and bad_epochs >= patience
    try:
        for epoch in range(start_epoch, epochs):
            if stop:
                break
            t0 = time.perf_counter()
            _set_epoch(train_loader, epoch)
            train = train_one_epoch(
                model,
                train_loader,
                optimizer,
                device=device,
                scheduler=scheduler,
                scaler=scaler,
                amp=amp,
                class_weights=class_weights,
                epoch=epoch,
                progress=progress and is_main_process,
                max_grad_norm=max_grad_norm,
            )
            val = validation_scores(evaluate(net, val_loader, device=device, amp=amp))
            record = {
                "epoch": float(epoch),
                **{f"train_{k}": v for k, v in train.items()},
                **val,
                "time_s": time.perf_counter() - t0,
            }
            key = _score(record)
            if key > best_key:
                best_key, best_epoch, bad_epochs = key, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            else:
                bad_epochs += 1
            history.append(record)
            stop = _broadcast_stop(bad_epochs >= patience, device)
            logger.info(
                "epoch %d: train loss %.4f acc %.3f | val loss %.4f auroc %.4f | %.0f tiles/s",
                epoch,
                train["loss"],
                train["acc"],
                val["val_loss"],
                val["val_auroc"],
                train["tiles_per_s"],
            )
            if is_main_process:
                save_checkpoint(
                    checkpoint_path,
                    {
                        "model": net.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "epoch": epoch,
                        "best_model": best_state,
                        "best_epoch": best_epoch,
                        "best_key": list(best_key),
                        "bad_epochs": bad_epochs,
                        "history": history,
                        "rng": capture_rng_state(),
                    },
                )
                if log_csv is not None:
                    _write_csv(Path(log_csv), history)
                if writer is not None:
                    for k, v in record.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch)
                    writer.flush()
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    finally:
        if writer is not None:
            writer.close()
    return FitResult(best_state_dict=copy.copy(best_state), best_epoch=best_epoch, history=history)
