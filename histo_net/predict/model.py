"""A loaded model bundle (both networks on a device) and the slide-level forward pass.

The prediction, the attention heatmap and the calibrated probabilities all come from one
MIL forward pass over the same embeddings. With a class-specific MIL (one attention branch
per class) the heatmap shows the attention row of the class the slide is called (or, when
no class is named, the most probable one); the other rows stay on the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histo_net.calibration import calibrated_probs
from histo_net.features.embed import SlideEmbedding
from histo_net.features.ood import (
    EMBEDDING,
    IMAGE,
    TUMOUR,
    DomainCheck,
    SlideStats,
    check_slide,
    group_passed,
)
from histo_net.io_utils import sha256_file
from histo_net.models.bundle import ModelBundle, load_bundle
from histo_net.models.encoders import PretrainedEncoder
from histo_net.models.mil import GatedAttentionMIL, attention_for_class
from histo_net.models.tile_cnn import TileClassifier
from histo_net.predict.decision import SlideDecision, decide_outcomes, effective_band


@dataclass
class LoadedModel:
    """A bundle with both networks built on a device, and the bundle's sha256."""

    bundle: ModelBundle
    encoder: TileClassifier | PretrainedEncoder
    mil: GatedAttentionMIL
    device: torch.device
    bundle_path: Path
    bundle_sha256: str


def load_model(bundle_path: Path, device: torch.device,
               encoder_weights: Path | None = None) -> LoadedModel:
    """Load a bundle (weights-only) and build encoder + MIL in eval mode on ``device``.

    ``encoder_weights``: the weights file of a bundle's pretrained encoder (else the path
    recorded at training time); ``ModelBundleError`` when missing or its sha256 differs.
    """
    bundle_path = Path(bundle_path).resolve()
    bundle = load_bundle(bundle_path)
    encoder = bundle.build_encoder(device, encoder_weights=encoder_weights).to(memory_format=torch.channels_last)
    return LoadedModel(bundle=bundle, encoder=encoder, mil=bundle.build_mil(device), device=device,
                       bundle_path=bundle_path, bundle_sha256=sha256_file(bundle_path))


def applied_band(bundle: ModelBundle) -> tuple[float, float]:
    """The band the rule applies (binary: widened to contain the threshold and 0.5)."""
    if len(bundle.class_names) == 2:
        return effective_band(bundle.indeterminate_band, bundle.threshold)
    return (float(bundle.indeterminate_band[0]), float(bundle.indeterminate_band[1]))


def decide_slide(bundle: ModelBundle, logits: np.ndarray, attention: np.ndarray,
                 checks: list[DomainCheck] | None = None) -> SlideDecision:
    """Calibrate one slide's (C,) logits with the bundle and apply :func:`decide_outcomes`.

    ``attention`` (N,), or (C,N) from a class-specific MIL: the decision then carries the row
    of the named class (else the most probable class), (N,) as the report expects. With a
    subtype head (``bundle.subtype_head``) ``logits`` are the (K,) subtype logits: the call is
    made on their top-level fold and the decision adds the subtype differential.
    """
    head = bundle.subtype_head
    fine = np.asarray(logits, dtype=np.float32)  # (C,), or (K,) subtype logits with a head
    logits = head.top_logits(fine) if head is not None else fine  # (C,)
    probs = calibrated_probs(np.asarray(logits)[None], bundle.temperature)[0]  # (C,)
    checks = list(checks or [])
    names = list(bundle.class_names)
    out = decide_outcomes(probs, class_names=names, threshold=bundle.threshold,
                          band=bundle.indeterminate_band, positive_index=bundle.positive_index,
                          image_ok=[group_passed(checks, IMAGE)], tumour_detected=[group_passed(checks, TUMOUR)],
                          embedding_ok=[group_passed(checks, EMBEDDING)])
    named = int(out.named[0])
    row = named if named >= 0 else int(np.argmax(probs))
    subtypes: dict[str, float] = {}
    if head is not None:  # the differential sums to the calibrated call; heatmap: best subtype of it
        diff = head.differential(fine, probs)  # (K,)
        subtypes = {n: float(p) for n, p in zip(head.names, diff)}
        row = head.best_in_class(diff, row)
    shown = attention_for_class(attention, row)  # (N,)
    return SlideDecision(class_names=names, logits=np.asarray(logits), probabilities=probs,
                         attention=shown, predicted_class=names[named] if named >= 0 else None,
                         outcome=out.outcome[0], checks=checks, subtype_probabilities=subtypes)


@torch.no_grad()
def mil_pass(model: LoadedModel, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One MIL forward over (N,D) embeddings -> (C,) logits and (N,) attention (float32);
    (C,N) attention from a class-specific MIL."""
    bag = torch.as_tensor(features, dtype=torch.float32, device=model.device)[None]  # (1,N,D)
    mask = torch.ones(bag.shape[:2], dtype=torch.bool, device=model.device)  # (1,N)
    logits, attention = model.mil.forward_with_attention(bag, mask)  # (1,C), (1,N)
    return logits[0].float().cpu().numpy(), attention[0].float().cpu().numpy()


def predict_from_features(model: LoadedModel, features: np.ndarray) -> SlideDecision:
    """MIL over one slide's (N,D) embeddings -> calibrated decision + attention (N,), no checks."""
    logits, attention = mil_pass(model, features)
    return decide_slide(model.bundle, logits, attention)


def predict_embedding(model: LoadedModel, emb: SlideEmbedding, *, tile_area: float
                      ) -> tuple[SlideDecision, SlideStats]:
    """The slide checks (bundle's domain reference) and the MIL pass -> decision + statistics.

    ``tile_area``: mm^2 of tissue one tile stands for (:func:`histo_net.features.ood.tile_area_mm2`).
    """
    stats, checks = check_slide(model.bundle.domain_reference, emb.features, emb.tile_probs, emb.qc,
                                tile_class_names=list(model.bundle.tile_class_names), tile_area=tile_area)
    logits, attention = mil_pass(model, emb.features)
    return decide_slide(model.bundle, logits, attention, checks), stats
