"""A loaded model bundle (both networks on a device) and the slide-level forward pass.

The prediction, the attention heatmap and the calibrated probabilities all come from one
MIL forward pass over the same embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histo_net.calibration import calibrated_probs
from histo_net.io_utils import sha256_file
from histo_net.models.bundle import ModelBundle, load_bundle
from histo_net.models.mil import GatedAttentionMIL
from histo_net.models.tile_cnn import TileClassifier
from histo_net.predict.decision import INDETERMINATE, OK, SlideDecision, decide


@dataclass
class LoadedModel:
    """A bundle with both networks built on a device, and the bundle's sha256."""

    bundle: ModelBundle
    encoder: TileClassifier
    mil: GatedAttentionMIL
    device: torch.device
    bundle_path: Path
    bundle_sha256: str


def load_model(bundle_path: Path, device: torch.device) -> LoadedModel:
    """Load a bundle (weights-only) and build encoder + MIL in eval mode on ``device``."""
    bundle_path = Path(bundle_path).resolve()
    bundle = load_bundle(bundle_path)
    encoder = bundle.build_encoder(device).to(memory_format=torch.channels_last)
    return LoadedModel(bundle=bundle, encoder=encoder, mil=bundle.build_mil(device), device=device,
                       bundle_path=bundle_path, bundle_sha256=sha256_file(bundle_path))


def decide_slide(bundle: ModelBundle, logits: np.ndarray, attention: np.ndarray) -> SlideDecision:
    """Calibrate one slide's (C,) logits with the bundle and apply :func:`decide`."""
    probs = calibrated_probs(np.asarray(logits)[None], bundle.temperature)[0]  # (C,)
    preds, indeterminate = decide(probs, threshold=bundle.threshold, band=bundle.indeterminate_band,
                                  positive_index=bundle.positive_index)
    return SlideDecision(class_names=list(bundle.class_names), logits=np.asarray(logits),
                         probabilities=probs, attention=np.asarray(attention),
                         predicted_class=bundle.class_names[int(preds[0])],
                         status=INDETERMINATE if bool(indeterminate[0]) else OK)


@torch.no_grad()
def predict_from_features(model: LoadedModel, features: np.ndarray) -> SlideDecision:
    """MIL over one slide's (N,D) embeddings -> calibrated decision + attention (N,)."""
    bag = torch.as_tensor(features, dtype=torch.float32, device=model.device)[None]  # (1,N,D)
    mask = torch.ones(bag.shape[:2], dtype=torch.bool, device=model.device)  # (1,N)
    logits, attention = model.mil.forward_with_attention(bag, mask)  # (1,C), (1,N)
    return decide_slide(model.bundle, logits[0].float().cpu().numpy(),
                        attention[0].float().cpu().numpy())
