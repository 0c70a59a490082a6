"""The one training loop (torchvision-references style) for the tile CNN and the MIL model.

A batch is ``(inputs, labels)``: ``inputs`` is one tensor (tiles, uint8 (B,3,H,W)) or a
tuple of tensors passed positionally to the model (MIL: bags (B,N,D) and mask (B,N));
``labels`` is (B,) int64. Models normalise inside. Mixed precision goes through
:func:`histo_net.device.autocast` and a ``GradScaler`` that is a no-op unless fp16 is in
use: one code path, no ``if amp:`` branches. :func:`fit` is restore -> epochs -> save,
around a small :class:`FitState`.
"""

from __future__ import annotations

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
from histo_net.distributed import broadcast_flag, sum_across_ranks
from histo_net.errors import NonFiniteLossError
from histo_net.io_utils import atomic_write_text
from histo_net.metrics import auroc, balanced_accuracy
from histo_net.models.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

Inputs = tuple[Tensor, ...]


@dataclass
class Predictions:
    """Outputs of :func:`evaluate`: mean loss, accuracy, logits (N,C) float32, labels (N,) int64."""

    loss: float
    acc: float
    logits: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings of :func:`fit` (AdamW + per-iteration warmup/cosine schedule)."""

    epochs: int
    lr: float
    weight_decay: float
    amp: bool = True
    patience: int = 3
    warmup_epochs: int = 0
    max_grad_norm: float | None = None
    steps_per_epoch: int | None = None  # default len(train_loader)
    class_weights: Tensor | None = None  # (C,) cross-entropy weights
    all_ranks: bool = True  # every torchrun rank runs this loop (collectives); False: this rank alone


@dataclass
class FitState:
    """Where training stands: next epoch, history, best weights and early-stopping counters."""

    best_state: dict[str, Tensor]
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    bad_epochs: int = 0

    def stopped(self, patience: int) -> bool:
        """True once ``patience`` epochs passed without improvement."""
        return bool(self.history) and self.bad_epochs >= patience


@dataclass
class FitResult:
    """Outcome of :func:`fit`: best weights (of the unwrapped model), their epoch, the history."""

    best_state_dict: dict[str, Tensor]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Optim:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel``, else ``model``."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in channels_last (do this before wrapping in DDP)."""
    return model.to(device=device, memory_format=torch.channels_last)


def _to_device(batch: Any, device: torch.device) -> tuple[Inputs, Tensor]:
    """``(inputs, labels)`` on ``device``: 4-D image tensors channels_last, labels int64."""
    inputs, labels = batch[0], batch[-1]
    inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    non_blocking = device.type == "cuda"
    moved = []
    for tensor in inputs:
        tensor = tensor.to(device, non_blocking=non_blocking)
        if tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        moved.append(tensor)
    return tuple(moved), labels.to(device, dtype=torch.int64, non_blocking=non_blocking)


def _progress(loader: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return loader
    from tqdm.auto import tqdm  # deferred: tqdm only when a bar is shown

    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)


def train_one_epoch(
    model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer, *,
    device: torch.device, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None, amp: bool = True,
    class_weights: Tensor | None = None, epoch: int = 0, progress: bool = True,
    max_grad_norm: float | None = None, all_ranks: bool = True,
) -> dict[str, float]:
    """One pass over ``loader``; ``scheduler`` (if any) steps every iteration.

    Returns ``loss`` (mean cross-entropy per item), ``acc``, ``items_per_s`` (summed over
    ranks under torch.distributed when ``all_ranks``), ``lr``. Raises
    :class:`NonFiniteLossError` on NaN/inf.
    """
    model.train()
    scaler = scaler if scaler is not None else make_grad_scaler(device, amp)
    weight = class_weights.to(device=device, dtype=torch.float32) if class_weights is not None else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for step, batch in enumerate(_progress(loader, progress, f"train {epoch}")):
        inputs, labels = _to_device(batch, device)
        with autocast(device, amp):
            logits = model(*inputs)  # (B,C)
        loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"epoch {epoch} step {step}: training loss is {loss.item()} "
                "(lower the learning rate or check inputs)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if max_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        batch_n = int(labels.shape[0])
        loss_sum += float(loss.detach()) * batch_n
        correct += int((logits.detach().argmax(dim=1) == labels).sum())
        seen += batch_n
    elapsed = max(time.perf_counter() - start, 1e-9)
    totals = [loss_sum, float(correct), float(seen)]
    loss_sum, correct_f, seen_f = sum_across_ranks(totals, device) if all_ranks else totals
    return {"loss": loss_sum / max(seen_f, 1), "acc": correct_f / max(seen_f, 1),
            "items_per_s": seen_f / elapsed, "lr": float(optimizer.param_groups[0]["lr"])}


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable[Any], *, device: torch.device, amp: bool = True,
             progress: bool = False) -> Predictions:
    """Predict every batch of ``loader`` with the unwrapped model in eval mode."""
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    all_logits: list[Tensor] = []
    all_labels: list[Tensor] = []
    for batch in _progress(loader, progress, "eval"):
        inputs, labels = _to_device(batch, device)
        with autocast(device, amp):
            logits = net(*inputs)  # (B,C)
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu())
    net.train(was_training)
    if not all_logits:
        return Predictions(float("nan"), float("nan"), np.zeros((0, 0), np.float32),
                           np.zeros((0,), np.int64))
    logits_t = torch.cat(all_logits)  # (N,C)
    labels_t = torch.cat(all_labels)  # (N,)
    return Predictions(loss=float(nn.functional.cross_entropy(logits_t, labels_t)),
                       acc=float((logits_t.argmax(1) == labels_t).float().mean()),
                       logits=logits_t.numpy().astype(np.float32),
                       labels=labels_t.numpy().astype(np.int64))


def validation_scores(pred: Predictions) -> dict[str, float]:
    """``val_loss/acc/bal_acc/auroc`` (macro OvR AUROC on softmax) from :func:`evaluate`."""
    if pred.logits.size == 0:
        return {"val_loss": float("nan"), "val_acc": float("nan"), "val_bal_acc": float("nan"),
                "val_auroc": float("nan")}
    probs = torch.softmax(torch.from_numpy(pred.logits), dim=1).numpy()
    return {"val_loss": pred.loss, "val_acc": pred.acc,
            "val_bal_acc": balanced_accuracy(pred.labels, probs.argmax(1)),
            "val_auroc": auroc(pred.labels, probs)}


def _score(record: dict[str, float]) -> tuple[float, float]:
    """Early-stopping key: validation AUROC, then lower loss (nan-safe, larger is better)."""
    auc, loss = record["val_auroc"], record["val_loss"]
    return (auc if math.isfinite(auc) else -math.inf, -loss if math.isfinite(loss) else -math.inf)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
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


def _set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the loader's samplers and dataset where they have one."""
    holders = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
               getattr(loader, "dataset", None)]
    holders.append(getattr(holders[1], "sampler", None))
    for holder in {id(h): h for h in holders if h is not None}.values():
        if hasattr(holder, "set_epoch"):
            holder.set_epoch(epoch)


def _make_optim(model: nn.Module, cfg: FitConfig, steps_per_epoch: int,
                device: torch.device) -> _Optim:
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.epochs * steps_per_epoch,
                                cfg.warmup_epochs * steps_per_epoch)
    return _Optim(optimizer, scheduler, make_grad_scaler(device, cfg.amp))


def restore_fit(path: Path, net: nn.Module, optim: _Optim) -> FitState:
    """Load a :func:`save_fit` checkpoint into ``net`` and ``optim``; returns its state."""
    ckpt = load_checkpoint(path, map_location="cpu")
    net.load_state_dict(ckpt["model"])
    optim.optimizer.load_state_dict(ckpt["optimizer"])
    optim.scheduler.load_state_dict(ckpt["scheduler"])
    optim.scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"])
    logger.info("resumed from %s at epoch %d", path, int(ckpt["epoch"]) + 1)
    return FitState(best_state=ckpt["best_model"], epoch=int(ckpt["epoch"]) + 1,
                    history=list(ckpt["history"]), best_epoch=int(ckpt["best_epoch"]),
                    best_key=(float(ckpt["best_key"][0]), float(ckpt["best_key"][1])),
                    bad_epochs=int(ckpt["bad_epochs"]))


def save_fit(path: Path, net: nn.Module, optim: _Optim, state: FitState) -> None:
    """Atomic weights-only checkpoint of model, optimiser, schedule, scaler, state and RNG."""
    save_checkpoint(path, {
        "model": net.state_dict(), "optimizer": optim.optimizer.state_dict(),
        "scheduler": optim.scheduler.state_dict(), "scaler": optim.scaler.state_dict(),
        "epoch": state.epoch - 1, "best_model": state.best_state, "best_epoch": state.best_epoch,
        "best_key": list(state.best_key), "bad_epochs": state.bad_epochs,
        "history": state.history, "rng": capture_rng_state()})


def run_epoch(model: nn.Module, train_loader: Any, val_loader: Any, optim: _Optim,
              cfg: FitConfig, state: FitState, *, device: torch.device, progress: bool) -> None:
    """Train one epoch, validate, update ``state`` (history, best weights, counters)."""
    net = unwrap_model(model)
    t0 = time.perf_counter()
    _set_epoch(train_loader, state.epoch)
    train = train_one_epoch(model, train_loader, optim.optimizer, device=device,
                            scheduler=optim.scheduler, scaler=optim.scaler, amp=cfg.amp,
                            class_weights=cfg.class_weights, epoch=state.epoch,
                            progress=progress, max_grad_norm=cfg.max_grad_norm,
                            all_ranks=cfg.all_ranks)
    val = validation_scores(evaluate(net, val_loader, device=device, amp=cfg.amp))
    record = {"epoch": float(state.epoch), **{f"train_{k}": v for k, v in train.items()}, **val,
              "time_s": time.perf_counter() - t0}
    key = _score(record)
    if key > state.best_key:
        state.best_key, state.best_epoch, state.bad_epochs = key, state.epoch, 0
        state.best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    else:
        state.bad_epochs += 1
    state.history.append(record)
    state.epoch += 1
    logger.info("epoch %d: train loss %.4f acc %.3f | val loss %.4f auroc %.4f | %.0f items/s",
                state.epoch - 1, train["loss"], train["acc"], val["val_loss"], val["val_auroc"],
                train["items_per_s"])


def fit(model: nn.Module, train_loader: Any, val_loader: Any, cfg: FitConfig, *,
        device: torch.device, checkpoint_path: Path, resume: bool = False,
        log_csv: Path | None = None, tensorboard_dir: Path | None = None,
        is_main_process: bool = True, progress: bool = True,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train with early stopping on validation; checkpoint every epoch; resume from it.

    ``model`` must already be on ``device`` (see :func:`prepare_model`), possibly wrapped in
    DDP. Best = highest macro OvR validation AUROC, ties broken by lower validation loss;
    training stops after ``cfg.patience`` epochs without improvement. The main process
    writes the checkpoint atomically after every epoch, then ``on_epoch_end(epoch, record)``.
    """
    net = unwrap_model(model)
    checkpoint_path = Path(checkpoint_path)
    optim = _make_optim(model, cfg, max(1, cfg.steps_per_epoch or len(train_loader)), device)
    if resume and checkpoint_path.is_file():
        state = restore_fit(checkpoint_path, net, optim)
    else:
        state = FitState(best_state={k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
    writer = None
    if tensorboard_dir is not None and is_main_process:
        from torch.utils.tensorboard import SummaryWriter  # deferred: tensorboard is heavy

        writer = SummaryWriter(log_dir=str(tensorboard_dir), purge_step=state.epoch)
    try:
        stop = state.stopped(cfg.patience)
        while state.epoch < cfg.epochs and not stop:
            run_epoch(model, train_loader, val_loader, optim, cfg, state, device=device,
                      progress=progress and is_main_process)
            stop = state.stopped(cfg.patience)
            stop = broadcast_flag(stop, device) if cfg.all_ranks else stop
            record = state.history[-1]
            if is_main_process:
                save_fit(checkpoint_path, net, optim, state)
                if log_csv is not None:
                    _write_csv(Path(log_csv), state.history)
                if writer is not None:
                    for k, v in record.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, state.epoch - 1)
                    writer.flush()
            if on_epoch_end is not None:
                on_epoch_end(state.epoch - 1, record)
    finally:
        if writer is not None:
            writer.close()
    return FitResult(best_state_dict=dict(state.best_state), best_epoch=state.best_epoch,
                     history=state.history)
