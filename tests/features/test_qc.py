"""QC descriptors: blur and stain distance respond to blurred and re-stained tiles."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from histo_net.features.qc import (
    QC_FEATURE_NAMES,
    build_qc_reference,
    slide_qc_summary,
    tile_qc_features,
)


def _textured_tiles(n: int, seed: int = 0) -> torch.Tensor:
    """(n,3,64,64) uint8 pink/purple tissue-like tiles with high-frequency texture."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([200.0, 120.0, 180.0]).view(1, 3, 1, 1)
    noise = torch.rand(n, 1, 64, 64, generator=g) * 80 - 40
    return (base + noise).clamp(0, 255).to(torch.uint8)


def test_shapes_and_names() -> None:
    feats = tile_qc_features(_textured_tiles(5))
    assert feats.shape == (5, len(QC_FEATURE_NAMES))
    assert torch.isfinite(feats).all()


def test_blur_lowers_laplacian_variance_and_is_flagged() -> None:
    sharp = _textured_tiles(8)
    kernel = torch.ones(3, 1, 5, 5) / 25.0
    blurred = F.conv2d(sharp.float(), kernel, padding=2, groups=3).round().to(torch.uint8)
    q_sharp, q_blur = tile_qc_features(sharp).numpy(), tile_qc_features(blurred).numpy()
    assert (q_blur[:, 0] < 0.25 * q_sharp[:, 0]).all()
    ref = build_qc_reference(q_sharp)
    assert slide_qc_summary(q_sharp, ref).blurred_fraction == 0.0
    summary = slide_qc_summary(q_blur, ref)
    assert summary.blurred_fraction == 1.0 and summary.warnings


def test_stain_shift_is_out_of_range() -> None:
    slides = [_textured_tiles(6, seed=s) for s in range(4)]
    qc = np.concatenate([tile_qc_features(t).numpy() for t in slides])
    index = np.repeat(np.arange(4), 6)
    ref = build_qc_reference(qc, index)
    assert slide_qc_summary(tile_qc_features(slides[0]).numpy(), ref).stain_in_range
    shifted = (slides[0].float() * torch.tensor([0.55, 1.0, 0.6]).view(1, 3, 1, 1)).to(torch.uint8)
    summary = slide_qc_summary(tile_qc_features(shifted).numpy(), ref)
    assert not summary.stain_in_range
    assert summary.stain_distance > ref.stain_distance_limit


def test_reference_round_trips_through_the_bundle_dict() -> None:
    from histo_net.features.qc import QCReference

    qc = tile_qc_features(_textured_tiles(6)).numpy()
    ref = build_qc_reference(qc, np.repeat(np.arange(3), 2))
    assert QCReference.from_dict(ref.to_dict()) == ref
    assert QCReference.from_dict({}) is None and QCReference.from_dict(None) is None


def test_dab_column_separates_brown_ihc_from_h_and_e() -> None:
    he = _textured_tiles(4)  # pink/purple
    brown = (torch.tensor([150.0, 95.0, 45.0]).view(1, 3, 1, 1) + he.float() * 0).to(torch.uint8).expand(4, 3, 64, 64)
    dab = QC_FEATURE_NAMES.index("dab")
    q_he, q_brown = tile_qc_features(he).numpy(), tile_qc_features(brown.contiguous()).numpy()
    assert (q_brown[:, dab] > q_he[:, dab] + 0.2).all()
