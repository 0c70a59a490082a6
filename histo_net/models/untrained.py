"""A real model bundle with random weights, for throughput benchmarks and pipeline tests.

Its predictions mean nothing; its format, shapes and cost are exactly those of a
trained bundle, so speed and robustness measured with it carry over.
"""

from __future__ import annotations

from pathlib import Path

import torch

from histo_net.models.bundle import ModelBundle, library_versions, save_bundle
from histo_net.models.mil import GatedAttentionMIL
from histo_net.models.tile_cnn import TileClassifier
from histo_net.taxonomy import DEFAULT_CLASSES, NON_TUMOUR


def untrained_bundle(*, backbone: str = "resnet18", tile_size_px: int = 224, target_mpp: float = 0.5,
                     classes: tuple[str, ...] = DEFAULT_CLASSES, seed: int = 0) -> ModelBundle:
    """Bundle with seeded random weights; tile classes are ``non_tumour`` + ``classes``."""
    torch.manual_seed(seed)
    tile_classes = [NON_TUMOUR, *classes]
    encoder = TileClassifier(backbone=backbone, num_classes=len(tile_classes))
    mil_kwargs = {"in_dim": encoder.embed_dim, "num_classes": len(classes), "hidden_dim": 64,
                  "attn_dim": 32, "dropout": 0.0}
    mil = GatedAttentionMIL(**mil_kwargs)
    return ModelBundle(
        class_names=list(classes), tile_class_names=tile_classes, positive_class=classes[0],
        target_mpp=target_mpp, tile_size_px=tile_size_px,
        encoder_name=backbone, encoder_kwargs={"num_classes": len(tile_classes)},
        encoder_state=encoder.state_dict(), mil_kwargs=mil_kwargs, mil_state=mil.state_dict(),
        temperature=1.5, threshold=0.5, indeterminate_band=(0.45, 0.55),
        training_config={"tiling": {"min_tissue_fraction": 0.5}},
        metrics={"note": "untrained: random weights, for benchmarks and tests only"},
        qc_reference=None, versions=library_versions())


def save_untrained_bundle(path: Path, **kwargs) -> Path:
    """``untrained_bundle(**kwargs)`` saved to ``path``; returns ``path``."""
    save_bundle(Path(path), untrained_bundle(**kwargs))
    return Path(path)
