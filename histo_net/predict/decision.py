"""Slide-level inference from tile embeddings: MIL, calibration and the decision rule.

The prediction, the attention heatmap and the calibrated probabilities all come
from one MIL forward pass over the same embeddings.
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

INDETERMINATE = "indeterminate"


@dataclass
class LoadedModel:
    """A bundle with both networks built on a device, and the bundle's sha256."""

    bundle: ModelBundle
    encoder: TileClassifier
    mil: GatedAttentionMIL
    device: torch.device
    bundle_path: Path
    bundle_sha256: str


@dataclass
class SlideDecision:
    """Calibrated slide-level output.

    probabilities: (C,) calibrated, in ``class_names`` order; attention: (N,) sums to 1.
    """

    class_names: list[str]
    logits: np.ndarray
    probabilities: np.ndarray
    attention: np.ndarray
    predicted_class: str
    status: str  # "ok" | "indeterminate"

    def probability_dict(self) -> dict[str, float]:
        """Class name -> calibrated probability."""
        return {name: float(p) for name, p in zip(self.class_names, self.probabilities)}


def load_model(bundle_path: Path, device: torch.device) -> LoadedModel:
    """Load a bundle (weights-only) and build encoder + MIL in eval mode on ``device``."""
    bundle = load_bundle(bundle_path)
    encoder = bundle.build_encoder(device)  # eval mode
    encoder = encoder.to(memory_format=torch.channels_last)
    mil = bundle.build_mil(device)  # eval mode
    return LoadedModel(bundle=bundle, encoder=encoder, mil=mil, device=device,
                       bundle_path=Path(bundle_path), bundle_sha256=sha256_file(Path(bundle_path)))


def decide(bundle: ModelBundle, probabilities: np.ndarray) -> tuple[str, str]:
    """Apply the bundle's threshold and indeterminate band.

    Binary task: the positive-class probability p is compared with the band
    [lo, hi] (indeterminate inside) and the threshold. More classes: argmax, and
    indeterminate when the top probability is below the band's upper edge.
    Returns (predicted_class, status).
    """
    names = list(bundle.class_names)
    lo, hi = bundle.indeterminate_band
    if len(names) == 2 and bundle.positive_class in names:
        pos = names.index(bundle.positive_class)
        p = float(probabilities[pos])
        predicted = names[pos] if p >= bundle.threshold else names[1 - pos]
        status = INDETERMINATE if lo <= p <= hi else "ok"
        return predicted, status
    top = int(np.argmax(probabilities))
    status = INDETERMINATE if float(probabilities[top]) < hi else "ok"
    return names[top], status


@torch.no_grad()
def predict_from_features(model: LoadedModel, features: np.ndarray) -> SlideDecision:
    """MIL over one slide's (N,D) embeddings -> calibrated decision + attention (N,)."""
    bag = torch.as_tensor(features, dtype=torch.float32, device=model.device)[None]  # (1,N,D)
    mask = torch.ones(bag.shape[:2], dtype=torch.bool, device=model.device)  # (1,N)
    logits, attention = model.mil.forward_with_attention(bag, mask)  # (1,C), (1,N)
    logits_np = logits[0].float().cpu().numpy()  # (C,)
    probs = calibrated_probs(logits_np[None], model.bundle.temperature)[0]  # (C,)
    predicted, status = decide(model.bundle, probs)
    return SlideDecision(class_names=list(model.bundle.class_names), logits=logits_np,
                         probabilities=probs, attention=attention[0].float().cpu().numpy(),
                         predicted_class=predicted, status=status)
