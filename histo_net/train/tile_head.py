"""Frozen-feature mode: the pretrained encoder a run references and the linear tile head.

With ``encoder.preset`` set, no tile CNN is trained: the pretrained trunk embeds every tile
once (features cache keyed by :func:`histo_net.models.encoders.feature_key_for`), MIL trains
on those bags, and a linear head on the same cached features gives the tile-class
probabilities the report's per-class maps and the tumour check need. Its targets are the
tile labels from the annotation GeoJSON when the manifest has annotations (the same labels
stage 1 trains on: ``non_tumour`` + slide classes), otherwise the trained MIL's instance
probabilities ``softmax(classifier(embed(x_i)))`` (soft targets over the slide classes).

The bundle then stores the preset, the weights' sha256 and path, and the head only
(:meth:`FrozenEncoder.bundle_record`); the foundation model's weights stay outside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from histo_net.errors import ConfigError, ModelBundleError
from histo_net.features.embed import SlideEmbedding
from histo_net.models.encoders import PretrainedEncoder, feature_key_for
from histo_net.models.hierarchy import SubtypeHead
from histo_net.models.mil import GatedAttentionMIL
from histo_net.models.presets import EncoderPreset, get_preset
from histo_net.models.weights import file_sha256
from histo_net.train.config import TrainConfig
from histo_net.train.context import RunContext

logger = logging.getLogger(__name__)

HeadSource = Literal["annotations", "mil_instances"]


@dataclass(frozen=True)
class FrozenEncoder:
    """The pretrained encoder of a frozen-feature run: preset + local weights file (hashed)."""

    preset: EncoderPreset
    weights_path: Path  # absolute, as used at training time
    weights_sha256: str
    weights_size_bytes: int

    @property
    def feature_key(self) -> str:
        """The features-cache key (preset fingerprint + weights sha256)."""
        return feature_key_for(self.preset, self.weights_sha256)

    def bundle_record(self) -> dict[str, Any]:
        """What a bundle stores instead of the weights: preset, its recipe, sha256 and path."""
        return {"preset": self.preset.name, "preset_config": self.preset.to_dict(),
                "weights_sha256": self.weights_sha256, "weights_path": str(self.weights_path),
                "weights_size_bytes": int(self.weights_size_bytes), "licence": self.preset.licence}

    def build(self, device: torch.device) -> PretrainedEncoder:
        """The frozen trunk (no head) on ``device``; the file must still have the recorded sha256."""
        enc = PretrainedEncoder(self.preset, weights_path=self.weights_path,
                                expected_sha256=self.weights_sha256)
        return enc.to(device).eval()


def frozen_encoder(cfg: TrainConfig) -> FrozenEncoder:
    """The run's pretrained encoder; ``ConfigError`` without weights, ``ModelBundleError`` for a
    missing file. Every frozen run references a file, so the bundle can always be rebuilt."""
    if cfg.encoder.preset is None:
        raise ConfigError("frozen_encoder: encoder.preset is not set")
    preset = get_preset(cfg.encoder.preset)
    if cfg.encoder.weights is None:
        hint = preset.weights_file or "model.safetensors"
        where = f" (download it by hand from {preset.weights_url})" if preset.weights_url else ""
        raise ConfigError(f"encoder.preset={preset.name} needs encoder.weights=/path/{hint}{where}")
    path = Path(cfg.encoder.weights).expanduser().resolve()
    if not path.is_file():
        raise ModelBundleError(f"{path}: weights file not found (encoder.weights)")
    return FrozenEncoder(preset=preset, weights_path=path, weights_sha256=file_sha256(path),
                         weights_size_bytes=path.stat().st_size)


@dataclass
class TileHead:
    """A trained linear tile head: ``(N,D)`` features -> ``(N,C)`` tile-class probabilities."""

    state: dict[str, Tensor]  # PretrainedEncoder keys: "head.weight" (C,D), "head.bias" (C,)
    tile_class_names: list[str]
    source: HeadSource
    n_tiles: int  # training tiles
    final_loss: float

    def probs(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(N,D)`` float32 -> ``(N,C)`` float32 softmax probabilities."""
        x = torch.as_tensor(np.asarray(features, np.float32))
        logits = F.linear(x, self.state["head.weight"].float(), self.state["head.bias"].float())
        return torch.softmax(logits, dim=1).numpy().astype(np.float32)


def fit_linear_head(features: Tensor, targets: Tensor, *, epochs: int, lr: float,
                    weight_decay: float, seed: int, class_weights: Tensor | None = None
                    ) -> tuple[nn.Linear, float]:
    """Full-batch AdamW on soft-target cross-entropy; ``(M,D)``, ``(M,C)`` probabilities.

    ``class_weights`` (C,) reweights each tile by its target class mass. Returns the head
    (CPU, eval) and the final loss.
    """
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(features.shape[1], targets.shape[1]).to(features.device)
    with torch.no_grad():  # seeded init (nn.Linear's default, from our generator)
        bound = 1.0 / float(features.shape[1]) ** 0.5
        head.weight.copy_(torch.empty(head.weight.shape).uniform_(-bound, bound, generator=gen))
        head.bias.zero_()
    weights = (targets @ class_weights.to(targets.device)) if class_weights is not None else None
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss = torch.zeros(())
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        per_tile = -(targets * F.log_softmax(head(features), dim=1)).sum(dim=1)  # (M,)
        loss = (per_tile * weights).sum() / weights.sum() if weights is not None else per_tile.mean()
        loss.backward()
        opt.step()
    return head.cpu().eval(), float(loss.detach())


@torch.no_grad()
def mil_instance_probs(mil: GatedAttentionMIL, features: Tensor) -> Tensor:
    """``(M,D)`` -> ``(M,C)``: the MIL classifier applied to each tile's embedding, softmaxed."""
    mil.eval()
    return torch.softmax(mil.classifier(mil.embed(features)).float(), dim=1)


def _sample(n: int, cap: int, seed: int) -> npt.NDArray[np.int64]:
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False)).astype(np.int64)


def train_tile_head(ctx: RunContext, embs: dict[str, SlideEmbedding], mil: GatedAttentionMIL,
                    subtypes: SubtypeHead | None = None) -> TileHead:
    """Fit the tile head on the training slides' cached features (see the module docstring);
    a subtype MIL head's instance probabilities are summed per class first."""
    ecfg = ctx.cfg.encoder
    annotated = ctx.manifest.has_annotations
    names = ctx.tile_class_names
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for i, slide in enumerate(ctx.slides_in("train")):
        emb = embs[slide.slide_id]
        if not len(emb.features):
            continue
        keep = _sample(len(emb.features), ecfg.head_max_tiles_per_slide, ctx.cfg.seed + i)
        feats.append(emb.features[keep])
        labels.append(ctx.tiles[slide.slide_id].labels[keep])
    if not feats:
        raise ConfigError("no training tiles for the tile head: every training slide has zero tiles")
    x = torch.from_numpy(np.concatenate(feats)).float().to(ctx.device)  # (M,D)
    class_weights = None
    if annotated:
        y = torch.from_numpy(np.concatenate(labels)).long().to(ctx.device)  # (M,)
        targets = F.one_hot(y, len(names)).float()  # (M,C)
        counts = torch.bincount(y, minlength=len(names)).float().cpu()
        class_weights = torch.where(counts > 0, counts.sum() / counts.clamp(min=1) / (counts > 0).sum(),
                                    torch.zeros(()))
        source: HeadSource = "annotations"
    else:
        targets = mil_instance_probs(mil.to(ctx.device), x)  # (M,C) soft targets, (M,K) subtypes
        if subtypes is not None:
            index = torch.as_tensor(subtypes.group_index, device=targets.device)
            targets = torch.zeros(len(x), len(names), device=targets.device).index_add_(1, index, targets)
        source = "mil_instances"
    head, loss = fit_linear_head(x, targets, epochs=ecfg.head_epochs, lr=ecfg.head_lr,
                                 weight_decay=ecfg.head_weight_decay, seed=ctx.cfg.seed,
                                 class_weights=class_weights)
    logger.info("tile head (%s): %d tiles, final loss %.4f", source, len(x), loss)
    state = {f"head.{k}": v.detach().cpu().clone() for k, v in head.state_dict().items()}
    return TileHead(state=state, tile_class_names=list(names), source=source, n_tiles=len(x),
                    final_loss=loss)


def with_tile_probs(embs: dict[str, SlideEmbedding], head: TileHead) -> dict[str, SlideEmbedding]:
    """``embs`` with ``tile_probs`` replaced by the head's ``(N,C)`` probabilities."""
    return {sid: SlideEmbedding(e.features, head.probs(e.features), e.qc) for sid, e in embs.items()}
