"""Gated attention MIL (Ilse et al. 2018), in the style of TRIDENT's ABMIL.

One small module, no mode flags: ``(B,N,D)`` bags with a ``(B,N)`` bool mask
(True = real tile) filled with ``-inf`` before the softmax, so padded tiles get
exactly zero attention and cannot change the prediction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedAttentionMIL(nn.Module):
    """Gated-attention pooling of tile embeddings into slide logits."""

    def __init__(
        self,
        *,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        #: constructor arguments, so a bundle can rebuild the module from the file alone
        self.init_kwargs: dict[str, int | float] = {
            "in_dim": int(in_dim),
            "num_classes": int(num_classes),
            "hidden_dim": int(hidden_dim),
            "attn_dim": int(attn_dim),
            "dropout": float(dropout),
        }
        self.in_dim = int(in_dim)
        self.num_classes = int(num_classes)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attn_u = nn.Sequential(
            nn.Linear(hidden_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout)
        )
        self.attn_w = nn.Linear(attn_dim, 1)
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def forward_with_attention(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(B,N,D)`` float, ``(B,N)`` bool -> ``(B,C)`` logits, ``(B,N)`` attention (one pass)."""
        if bags.dim() != 3 or mask.shape != bags.shape[:2]:
            raise ValueError(
                f"expected bags (B,N,D), mask (B,N); got {tuple(bags.shape)}, {tuple(mask.shape)}"
            )
        mask = mask.bool()  # (B,N)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every bag needs at least one real tile (mask row is all False)")
        h = self.embed(bags)  # (B,N,H)
        h = h.masked_fill(~mask.unsqueeze(-1), 0.0)  # (B,N,H) padding zeroed (guards NaN padding)
        gate = self.attn_v(h) * self.attn_u(h)  # (B,N,A)
        scores = self.attn_w(gate).squeeze(-1).float()  # (B,N) float32
        scores = scores.masked_fill(~mask, float("-inf"))  # (B,N)
        attn = torch.softmax(scores, dim=1)  # (B,N), 0 at padding, rows sum to 1
        pooled = torch.bmm(attn.unsqueeze(1).to(h.dtype), h).squeeze(1)  # (B,H)
        logits = self.classifier(pooled)  # (B,C)
        return logits, attn

    def forward(self, bags: Tensor, mask: Tensor) -> Tensor:
        """``(B,N,D)``, ``(B,N)`` -> ``(B,C)`` logits."""
        return self.forward_with_attention(bags, mask)[0]

    def attention(self, bags: Tensor, mask: Tensor) -> Tensor:
        """``(B,N,D)``, ``(B,N)`` -> ``(B,N)`` softmax attention weights."""
        return self.forward_with_attention(bags, mask)[1]


def pad_bags(bags: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack ``(N_i,D)`` bags into zero-padded ``(B,Nmax,D)`` and a ``(B,Nmax)`` bool mask."""
    if not bags:
        raise ValueError("pad_bags needs at least one bag")
    n_max = max(int(b.shape[0]) for b in bags)
    dim = int(bags[0].shape[1])
    out = bags[0].new_zeros((len(bags), n_max, dim))  # (B,Nmax,D)
    mask = torch.zeros((len(bags), n_max), dtype=torch.bool, device=bags[0].device)  # (B,Nmax)
    for i, bag in enumerate(bags):
        out[i, : bag.shape[0]] = bag
        mask[i, : bag.shape[0]] = True
    return out, mask
