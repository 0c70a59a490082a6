"""Gated attention MIL (Ilse et al. 2018), in the style of TRIDENT's ABMIL.

One small module, no mode flags: ``(B,N,D)`` bags with a ``(B,N)`` bool mask
(True = real tile) filled with ``-inf`` before the softmax, so padded tiles get
exactly zero attention and cannot change the prediction.

``class_specific=True`` gives CLAM's multi-branch variant (Lu et al. 2021,
``CLAM_MB``): one attention branch per class over the shared gated features,
so each class pools its own slide vector and its heatmap explains that class.
Attention is then ``(B,C,N)``; class ``c``'s logit is
``classifier.weight[c] . pooled[:, c] + classifier.bias[c]`` (CLAM's per-class
``Linear(H,1)`` heads, stacked). The default path (one branch, ``(B,N)``
attention) is unchanged: same constructor, ``init_kwargs``, state-dict keys,
initialisation and outputs as before the option existed.
"""

from __future__ import annotations

import numpy as np
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
        class_specific: bool = False,
    ) -> None:
        super().__init__()
        #: constructor arguments, so a bundle can rebuild the module from the file alone
        #: (``class_specific`` only recorded when True, so default bundles are unchanged)
        self.init_kwargs: dict[str, int | float] = {
            "in_dim": int(in_dim),
            "num_classes": int(num_classes),
            "hidden_dim": int(hidden_dim),
            "attn_dim": int(attn_dim),
            "dropout": float(dropout),
        }
        if class_specific:
            self.init_kwargs["class_specific"] = True
        self.in_dim = int(in_dim)
        self.num_classes = int(num_classes)
        self.class_specific = bool(class_specific)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attn_u = nn.Sequential(
            nn.Linear(hidden_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout)
        )
        self.attn_w = nn.Linear(attn_dim, num_classes if class_specific else 1)  # branches
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def forward_with_attention(self, bags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(B,N,D)`` float, ``(B,N)`` bool -> ``(B,C)`` logits and attention (one pass).

        Attention is ``(B,N)`` by default, ``(B,C,N)`` with ``class_specific=True``;
        every row sums to 1 over the real tiles and is exactly 0 at padding.
        """
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
        if self.class_specific:
            return self._class_specific(h, gate, mask)
        scores = self.attn_w(gate).squeeze(-1).float()  # (B,N) float32
        scores = scores.masked_fill(~mask, float("-inf"))  # (B,N)
        attn = torch.softmax(scores, dim=1)  # (B,N), 0 at padding, rows sum to 1
        pooled = torch.bmm(attn.unsqueeze(1).to(h.dtype), h).squeeze(1)  # (B,H)
        logits = self.classifier(pooled)  # (B,C)
        return logits, attn

    def _class_specific(self, h: Tensor, gate: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """CLAM-MB pooling: ``(B,N,H)``, ``(B,N,A)``, ``(B,N)`` -> ``(B,C)``, ``(B,C,N)``."""
        scores = self.attn_w(gate).transpose(1, 2).float()  # (B,C,N) float32
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))  # (B,C,N)
        attn = torch.softmax(scores, dim=-1)  # (B,C,N), 0 at padding, rows sum to 1
        pooled = torch.bmm(attn.to(h.dtype), h)  # (B,C,H): one slide vector per class
        weight = self.classifier.weight.to(pooled.dtype)  # (C,H)
        logits = (pooled * weight).sum(-1) + self.classifier.bias.to(pooled.dtype)  # (B,C)
        return logits, attn

    def forward(self, bags: Tensor, mask: Tensor) -> Tensor:
        """``(B,N,D)``, ``(B,N)`` -> ``(B,C)`` logits."""
        return self.forward_with_attention(bags, mask)[0]

    def attention(self, bags: Tensor, mask: Tensor) -> Tensor:
        """``(B,N,D)``, ``(B,N)`` -> ``(B,N)`` (or ``(B,C,N)`` class-specific) attention."""
        return self.forward_with_attention(bags, mask)[1]


def attention_for_class(attention: Tensor | np.ndarray, class_index: int) -> np.ndarray:
    """One slide's attention as ``(N,)`` float32: ``(N,)`` unchanged, ``(C,N)`` (class-specific)
    -> row ``class_index`` (the class the heatmap explains)."""
    attn = np.asarray(attention.detach().cpu() if isinstance(attention, Tensor) else attention,
                      dtype=np.float32)
    if attn.ndim == 2:
        return np.ascontiguousarray(attn[int(class_index)])
    if attn.ndim != 1:
        raise ValueError(f"attention must be (N,) or (C,N), got {attn.shape}")
    return attn


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
