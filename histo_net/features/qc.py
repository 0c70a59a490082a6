"""Per-tile quality descriptors and slide-level checks against the training cohort.

Computed on the same uint8 batches the encoder sees, so QC costs one cheap pass on the
device. Descriptor columns (``QC_FEATURE_NAMES``):

- ``blur_laplacian_var``: variance of the 4-neighbour Laplacian of grey (0-255); low = blurred
- ``od_r``, ``od_g``, ``od_b``: mean optical density per channel over tissue pixels
- ``haematoxylin``, ``eosin``: mean Ruifrok colour-deconvolution concentrations over tissue
- ``tissue_pixel_fraction``: fraction of pixels with optical density above the glass floor
- ``dab``: mean Ruifrok DAB concentration over tissue pixels (about 0 on H&E; high on IHC)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from histo_net.stain import hed_from_od_matrix

QC_FEATURE_NAMES: tuple[str, ...] = (
    "blur_laplacian_var", "od_r", "od_g", "od_b", "haematoxylin", "eosin", "tissue_pixel_fraction", "dab",
)
STAIN_COLUMNS: tuple[int, ...] = (1, 2, 3, 4, 5)
_OD_TISSUE_FLOOR = 0.15  # summed OD below this is glass
#: share of blurred tiles above which a slide gets a warning
BLURRED_WARN_FRACTION = 0.25


@torch.no_grad()
def tile_qc_features(x: torch.Tensor) -> torch.Tensor:
    """QC descriptors for a batch of tiles, cheap next to the encoder forward.

    Blur uses the full-resolution grey image; the stain descriptors use 4x4 average-pooled
    pixels (the deconvolution is linear in optical density, so mean H and E are the
    deconvolved mean OD).

    Args:
        x: (B,3,H,W) uint8 (or float in [0,255]) RGB tiles, on any device.
    Returns:
        (B,K) float32 on the same device, columns as in ``QC_FEATURE_NAMES``.
    """
    rgb = x.float().contiguous()  # (B,3,H,W) 0-255
    grey = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]  # (B,H,W)
    lap = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
           - 4.0 * grey[:, 1:-1, 1:-1])  # (B,H-2,W-2)
    blur = lap.flatten(1).var(dim=1)  # (B,)
    pooled = F.avg_pool2d(rgb, 4) if min(rgb.shape[-2:]) >= 8 else rgb  # (B,3,H/4,W/4)
    od = -torch.log((pooled + 1.0) / 256.0)  # (B,3,h,w) optical density
    weight = (od.sum(dim=1) > _OD_TISSUE_FLOOR).float().flatten(1)  # (B,hw) tissue pixels
    n_tissue = weight.sum(dim=1).clamp(min=1.0)  # (B,)
    od_mean = (od.flatten(2) * weight.unsqueeze(1)).sum(dim=2) / n_tissue.unsqueeze(1)  # (B,3)
    hed_mean = od_mean @ hed_from_od_matrix(rgb.device)  # (B,3) H, E, DAB
    frac = weight.mean(dim=1)  # (B,)
    return torch.cat([blur[:, None], od_mean, hed_mean[:, :2], frac[:, None], hed_mean[:, 2:]],
                     dim=1).float()  # (B,8)


@dataclass(frozen=True)
class QCReference:
    """The training cohort's QC statistics, stored in the model bundle.

    ``stain_mean``/``stain_std`` are over training slides' mean stain descriptors
    (``STAIN_COLUMNS``); ``stain_distance_limit`` is in RMS z-score units;
    ``blur_threshold`` is a Laplacian variance (0-255 grey scale).
    """

    stain_mean: tuple[float, ...]
    stain_std: tuple[float, ...]
    stain_distance_limit: float
    blur_threshold: float
    feature_names: tuple[str, ...] = QC_FEATURE_NAMES
    stain_columns: tuple[int, ...] = STAIN_COLUMNS

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the weights-only bundle (lists, floats)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> QCReference | None:
        """Inverse of :meth:`to_dict`; None for an empty or missing reference."""
        if not data:
            return None
        return cls(stain_mean=tuple(float(v) for v in data["stain_mean"]),
                   stain_std=tuple(float(v) for v in data["stain_std"]),
                   stain_distance_limit=float(data["stain_distance_limit"]),
                   blur_threshold=float(data["blur_threshold"]),
                   feature_names=tuple(data.get("feature_names", QC_FEATURE_NAMES)),
                   stain_columns=tuple(int(c) for c in data.get("stain_columns", STAIN_COLUMNS)))


@dataclass
class SlideQC:
    """Slide-level QC from its tiles' descriptors: blur share, stain distance, warnings."""

    blurred_fraction: float | None = None
    stain_distance: float | None = None
    stain_in_range: bool | None = None
    warnings: list[str] = field(default_factory=list)


def _stain_distance(slide_mean: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> float:
    z = (slide_mean - ref_mean) / np.maximum(ref_std, 1e-6)
    return float(np.sqrt(np.mean(z**2)))


def build_qc_reference(qc: np.ndarray, slide_index: np.ndarray | None = None) -> QCReference:
    """Reference statistics of the training cohort.

    Args:
        qc: (M,K) tile descriptors from ``tile_qc_features`` over training tiles.
        slide_index: (M,) int slide id per tile; when given, the stain-distance limit is set
            from the spread of training slides (max slide distance x 1.5, at least 1.5).
    """
    qc = np.asarray(qc, dtype=np.float64)
    stain = qc[:, STAIN_COLUMNS]
    if slide_index is not None and len(np.unique(slide_index)) >= 2:
        means = np.stack([stain[slide_index == s].mean(axis=0) for s in np.unique(slide_index)])
        ref_mean = means.mean(axis=0)
        ref_std = means.std(axis=0) + 0.05 * np.abs(ref_mean)
        limit = max(1.5, 1.5 * max(_stain_distance(m, ref_mean, ref_std) for m in means))
    else:
        ref_mean, ref_std, limit = stain.mean(axis=0), stain.std(axis=0), 3.0
    blur = float(0.25 * np.median(qc[:, 0])) if len(qc) else 0.0
    return QCReference(stain_mean=tuple(ref_mean.tolist()), stain_std=tuple(ref_std.tolist()),
                       stain_distance_limit=float(limit), blur_threshold=blur)


def slide_qc_summary(qc: np.ndarray, reference: QCReference | None) -> SlideQC:
    """Slide QC from its tiles' descriptors (N,K) and the bundle's reference.

    ``blurred_fraction`` is the share of tiles below the training blur threshold;
    ``stain_distance`` the RMS z-score of the slide's mean stain descriptor from the cohort.
    """
    qc = np.asarray(qc, dtype=np.float64)
    out = SlideQC()
    if reference is None or len(qc) == 0:
        return out
    blurred = float(np.mean(qc[:, 0] < reference.blur_threshold))
    cols = list(reference.stain_columns)
    distance = _stain_distance(qc[:, cols].mean(axis=0), np.asarray(reference.stain_mean),
                               np.asarray(reference.stain_std))
    in_range = distance <= reference.stain_distance_limit
    out.blurred_fraction, out.stain_distance, out.stain_in_range = blurred, distance, bool(in_range)
    if blurred > BLURRED_WARN_FRACTION:
        out.warnings.append(f"{blurred:.0%} of tiles look blurred (out of focus); interpret with care")
    if not in_range:
        out.warnings.append(
            f"stain differs from the training cohort (distance {distance:.2f} > "
            f"{reference.stain_distance_limit:.2f}); prediction may be unreliable")
    return out
