"""Training and prediction for the gated-attention MIL slide model over feature bags.

Bags are lists of float tensors ``(N_i, D)`` (one per slide). Training sub-samples
each bag to at most ``max_bag_size`` tiles, pads mini-batches with masks, uses
class weights, AdamW + cosine, and early stopping on validation (AUROC, then loss).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from histo_net.metrics import auroc
from histo_net.models.mil import GatedAttentionMIL, pad_bags

logger = logging.getLogger(__name__)


def class_weights_from_labels(labels: Sequence[int], num_classes: int) -> Tensor:
    """Inverse-frequency weights ``(C,)`` float32, mean 1 over present classes; absent get 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(
        np.float64
    )
    weights = np.where(
        counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, int((counts > 0).sum())), 0.0
    )
    return torch.tensor(weights, dtype=torch.float32)


def _subsample(bag: Tensor, max_bag_size: int, generator: torch.Generator) -> Tensor:
    """Random ``min(N, max_bag_size)`` rows of ``bag`` ``(N,D)``, without replacement."""
    n = int(bag.shape[0])
    if n <= max_bag_size:
        return bag
    idx = torch.randperm(n, generator=generator)[:max_bag_size]
    return bag[idx]


@torch.no_grad()
def predict_bags(
    model: GatedAttentionMIL, bags: Sequence[Tensor], *, device: torch.device
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Full-bag prediction, one slide at a time, in eval mode.

    Returns logits ``(S,C)`` float32 and per-bag attention ``(N_i,)`` float32
    (both from the same forward pass).
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
    num_classes = model.num_classes
    stacked = (
        np.stack(logits_out).astype(np.float32)
        if logits_out
        else np.zeros((0, num_classes), np.float32)
    )
    return stacked, attn_out


def _val_record(
    model: GatedAttentionMIL, bags: Sequence[Tensor], labels: np.ndarray, device: torch.device
) -> dict[str, float]:
    logits, _ = predict_bags(model, bags, device=device)
    if len(labels) == 0:
        return {"val_loss": float("nan"), "val_auroc": float("nan"), "val_acc": float("nan")}
    logits_t = torch.from_numpy(logits)
    labels_t = torch.from_numpy(labels)
    probs = torch.softmax(logits_t, 1).numpy()
    return {
        "val_loss": float(nn.functional.cross_entropy(logits_t, labels_t)),
        "val_auroc": auroc(labels, probs),
        "val_acc": float((probs.argmax(1) == labels).mean()),
    }


def train_mil(
    train_bags: Sequence[Tensor],
    train_labels: Sequence[int],
    val_bags: Sequence[Tensor],
    val_labels: Sequence[int],
    *,
    num_classes: int,
    mil_kwargs: dict,
    epochs: int = 50,
    lr: float = 2e-4,
    weight_decay: float = 1e-4,
    max_bag_size: int = 512,
    class_weighted: bool = True,
    patience: int = 10,
    seed: int = 0,
    device: torch.device | None = None,
    batch_size: int = 4,
) -> tuple[GatedAttentionMIL, list[dict]]:
    """Train :class:`GatedAttentionMIL`; returns the best model (eval mode) and the history.

    ``mil_kwargs`` are extra constructor arguments (hidden_dim, attn_dim,
    dropout); ``in_dim`` comes from the bags. The full constructor arguments are
    on ``model.init_kwargs``. ``device`` defaults to CPU. Deterministic for a given ``seed`` on CPU.
    """
    if not train_bags:
        raise ValueError("train_mil needs at least one training bag")
    device = device or torch.device("cpu")
    in_dim = int(train_bags[0].shape[1])
    y_train = np.asarray(train_labels, dtype=np.int64)
    y_val = np.asarray(val_labels, dtype=np.int64)
    kwargs = {**mil_kwargs, "in_dim": in_dim, "num_classes": num_classes}
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = GatedAttentionMIL(**kwargs).to(device)
        weight = (
            class_weights_from_labels(y_train, num_classes).to(device) if class_weighted else None
        )
        criterion = nn.CrossEntropyLoss(weight=weight)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
        history: list[dict] = []
        best_key = (-math.inf, -math.inf)
        best_state = copy.deepcopy(model.state_dict())
        bad_epochs = 0
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(train_bags), generator=generator).tolist()
            loss_sum = 0.0
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                bags = [
                    _subsample(
                        torch.as_tensor(train_bags[i], dtype=torch.float32), max_bag_size, generator
                    )
                    for i in chosen
                ]
                x, mask = pad_bags([b.to(device) for b in bags])  # (B,N,D), (B,N)
                target = torch.as_tensor(y_train[chosen], device=device)  # (B,)
                loss = criterion(model(x, mask), target)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"MIL epoch {epoch}: training loss is {loss.item()}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(chosen)
            scheduler.step()
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / len(order),
                **_val_record(model, val_bags, y_val, device),
            }
            history.append(record)
            auc, vloss = record["val_auroc"], record["val_loss"]
            key = (
                auc if math.isfinite(auc) else -math.inf,
                -vloss if math.isfinite(vloss) else -record["train_loss"],
            )
            if key > best_key:
                best_key, bad_epochs = key, 0
                best_state = copy.deepcopy(model.state_dict())
                record["best"] = True
            else:
                bad_epochs += 1
            logger.debug("MIL epoch %d: %s", epoch, record)
            if bad_epochs >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), history
