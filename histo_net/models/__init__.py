"""Models: the backbone registry, the tile classifier and gated-attention MIL."""

from histo_net.models.mil import GatedAttentionMIL
from histo_net.models.registry import create_model, list_models, register_model
from histo_net.models.tile_cnn import IMAGENET_MEAN, IMAGENET_STD, TileClassifier

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "GatedAttentionMIL",
    "TileClassifier",
    "create_model",
    "list_models",
    "register_model",
]
