"""Tile classifier: a registry backbone plus a linear head (timm-style split).

Inputs are raw RGB tiles, uint8 or float on the 0-255 scale; normalisation
happens inside the model (``mean``/``std`` are buffers on the 0-255 scale), so
datasets, inference and the bundle never disagree about preprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from histo_net.errors import ModelBundleError
from histo_net.models.checkpoint import load_checkpoint
from histo_net.models.registry import create_model
from histo_net.stain import STAIN_NORMALIZATIONS, normalise_stain

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_HEAD_PREFIXES: tuple[str, ...] = ("fc.", "classifier.", "head.")


class TileClassifier(nn.Module):
    """Backbone ``(B,3,H,W) -> (B,D)`` features and a dropout + linear head ``(B,D) -> (B,C)``."""

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        num_classes: int,
        weights_path: str | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        dropout: float = 0.0,
        stain_normalization: str = "none",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if stain_normalization not in STAIN_NORMALIZATIONS:
            raise ValueError(f"stain_normalization must be one of {STAIN_NORMALIZATIONS}")
        #: constructor arguments except ``weights_path`` (bundles store the trained state)
        self.init_kwargs: dict[str, object] = {
            "backbone": backbone,
            "num_classes": int(num_classes),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "dropout": float(dropout),
            "stain_normalization": str(stain_normalization),
        }
        self.stain_normalization = str(stain_normalization)
        self.backbone_name = backbone
        self.backbone = create_model(backbone)
        self.embed_dim: int = int(self.backbone.embed_dim)
        self.num_classes = int(num_classes)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.embed_dim, self.num_classes))
        if weights_path is not None:
            self.load_weights(Path(weights_path))

    def load_weights(self, path: Path) -> None:
        """Load a local state dict: a full TileClassifier one or a bare backbone one.

        Backbone files may carry their own classification layer (``fc.*`` /
        ``classifier.*``), which is ignored. ``ModelBundleError`` when unreadable
        or when backbone keys are missing.
        """
        state = load_checkpoint(path)
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        if not all(isinstance(v, Tensor) for v in state.values()):
            raise ModelBundleError(f"{path}: not a state dict of tensors")
        try:
            if any(k.startswith("backbone.") for k in state):
                self.load_state_dict(state, strict=True)
                return
            result = self.backbone.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ModelBundleError(
                f"{path}: weights do not fit {self.backbone_name} ({str(exc).splitlines()[0]})"
            ) from None
        unexpected = [k for k in result.unexpected_keys if not k.startswith(_HEAD_PREFIXES)]
        if result.missing_keys or unexpected:
            raise ModelBundleError(
                f"{path}: weights do not fit {self.backbone_name} "
                f"({len(result.missing_keys)} missing, {len(unexpected)} unexpected keys)"
            )
        logger.info("loaded backbone weights from %s", path)

    def normalize(self, x: Tensor) -> Tensor:
        """``(B,3,H,W)`` uint8 or float 0-255 -> float32 normalised with the buffers.

        With ``stain_normalization`` set, tiles are first stain-normalised (per tile, see
        :func:`histo_net.stain.normalise_stain`), in training and prediction alike.
        """
        x = normalise_stain(x, self.stain_normalization)  # (B,3,H,W) float32, 0-255
        return (x - self.mean) / self.std  # (B,3,H,W)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B,3,H,W)`` uint8/float 0-255 -> ``(B,D)`` float embeddings."""
        return self.backbone(self.normalize(x))  # (B,D)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B,D)`` features -> ``(B,C)`` logits."""
        return self.head(features)  # (B,C)

    def forward(self, x: Tensor) -> Tensor:
        """``(B,3,H,W)`` -> ``(B,C)`` logits."""
        return self.forward_head(self.forward_features(x))
