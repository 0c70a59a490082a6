"""Per-tile quality descriptors and out-of-distribution checks against the training cohort.

Computed on the same uint8 batches the encoder sees, so QC costs one cheap pass on
the device. Descriptor columns (``QC_FEATURE_NAMES``):

- ``blur_laplacian_var``: variance of the 3x3 Laplacian of grey (0-255 scale); low = blurred
- ``od_r``, ``od_g``, ``od_b``: mean optical density per channel over tissue pixels
- ``haematoxylin``, ``eosin``: mean Ruifrok colour-deconvolution concentrations over tissue pixels
- ``tissue_pixel_fraction``: fraction of pixels with optical density above the glass floor
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

QC_FEATURE_NAMES: tuple[str, ...] = (
    "blur_laplacian_var", "od_r", "od_g", "od_b", "haematoxylin", "eosin", "tissue_pixel_fraction",
)
STAIN_COLUMNS: tuple[int, ...] = (1, 2, 3, 4, 5)

# Ruifrok & Johnston H, E, DAB optical-density vectors (rows), as in skimage.color.rgb2hed.
_RUIFROK_RGB_FROM_HED = (
    (0.65, 0.70, 0.29),
    (0.07, 0.99, 0.11),
    (0.27, 0.57, 0.78),
)
_OD_TISSUE_FLOOR = 0.15  # summed OD below this is glass


def _hed_from_od_matrix(device: torch.device) -> torch.Tensor:
    rgb_from_hed = torch.tensor(_RUIFROK_RGB_FROM_HED, dtype=torch.float32, device=device)
    rgb_from_hed = rgb_from_hed / rgb_from_hed.norm(dim=1, keepdim=True)
    return torch.linalg.inv(rgb_from_hed)  # (3,3): od_row @ M -> hed_row


@torch.no_grad()
def tile_qc_features(x: torch.Tensor) -> torch.Tensor:
    """QC descriptors for a batch of tiles, cheap next to the encoder forward.

    Blur uses the full-resolution grey image; the stain descriptors use 4x4
    average-pooled pixels (the Ruifrok deconvolution is linear in optical density,
    so mean H and E are the deconvolved mean OD).

    Args:
        x: (B,3,H,W) uint8 (or float in [0,255]) RGB tiles, on any device.
    Returns:
        (B,K) float32 on the same device, columns as in ``QC_FEATURE_NAMES``.
    """
    rgb = x.float().contiguous()  # (B,3,H,W) 0-255
    grey = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]  # (B,H,W)
    lap = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
           - 4.0 * grey[:, 1:-1, 1:-1])  # (B,H-2,W-2) 4-neighbour Laplacian
    blur = lap.flatten(1).var(dim=1)  # (B,)

    pooled = F.avg_pool2d(rgb, 4) if min(rgb.shape[-2:]) >= 8 else rgb  # (B,3,H/4,W/4)
    od = -torch.log((pooled + 1.0) / 256.0)  # (B,3,h,w) optical density
    weight = (od.sum(dim=1) > _OD_TISSUE_FLOOR).float().flatten(1)  # (B,hw) tissue pixels
    n_tissue = weight.sum(dim=1).clamp(min=1.0)  # (B,)
    od_mean = (od.flatten(2) * weight.unsqueeze(1)).sum(dim=2) / n_tissue.unsqueeze(1)  # (B,3)
    he_mean = (od_mean @ _hed_from_od_matrix(rgb.device))[:, :2]  # (B,2)
    frac = weight.mean(dim=1)  # (B,)
    return torch.cat([blur[:, None], od_mean, he_mean, frac[:, None]], dim=1).float()  # (B,7)


def _stain_distance(slide_mean: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> float:
    z = (slide_mean - ref_mean) / np.maximum(ref_std, 1e-6)
    return float(np.sqrt(np.mean(z**2)))


def build_qc_reference(qc: np.ndarray, slide_index: np.ndarray | None = None) -> dict:
    """Reference statistics of the training cohort, stored in the model bundle.

    Args:
        qc: (M,K) tile descriptors from ``tile_qc_features`` over training tiles.
        slide_index: (M,) int slide id per tile; when given, the stain-distance limit is
            set from the spread of training slides (max slide distance x 1.5, at least 1.5).
    Returns:
        JSON-safe dict: feature names, per-feature stain mean/std (over slide means when
        slides are given), blur threshold (0.25 x median training Laplacian variance),
        stain distance limit.
    """
    qc = np.asarray(qc, dtype=np.float64)
    stain = qc[:, STAIN_COLUMNS]
    if slide_index is not None and len(np.unique(slide_index)) >= 2:
        slides = np.unique(slide_index)
        means = np.stack([stain[slide_index == s].mean(axis=0) for s in slides])
        ref_mean, ref_std = means.mean(axis=0), means.std(axis=0) + 0.05 * np.abs(means.mean(axis=0))
        distances = [_stain_distance(m, ref_mean, ref_std) for m in means]
        limit = max(1.5, 1.5 * max(distances))
    else:
        ref_mean, ref_std = stain.mean(axis=0), stain.std(axis=0)
        limit = 3.0
    return {
        "feature_names": list(QC_FEATURE_NAMES),
        "stain_columns": list(STAIN_COLUMNS),
        "stain_mean": ref_mean.tolist(),
        "stain_std": ref_std.tolist(),
        "stain_distance_limit": float(limit),
        "blur_threshold": float(0.25 * np.median(qc[:, 0])) if len(qc) else 0.0,
    }


def slide_qc_summary(qc: np.ndarray, reference: dict | None) -> dict:
    """Slide-level QC from its tiles' descriptors (N,K) and the bundle's reference.

    Returns ``blurred_fraction`` (share of tiles below the training blur threshold),
    ``stain_distance`` (RMS z-score of the slide's mean stain descriptor from the
    training cohort), ``stain_in_range`` and human-readable ``warnings``.
    """
    qc = np.asarray(qc, dtype=np.float64)
    out: dict = {"blurred_fraction": None, "stain_distance": None, "stain_in_range": None,
                 "warnings": []}
    if not reference or len(qc) == 0:
        return out
    blurred = float(np.mean(qc[:, 0] < reference["blur_threshold"]))
    cols = list(reference["stain_columns"])
    distance = _stain_distance(qc[:, cols].mean(axis=0), np.asarray(reference["stain_mean"]),
                               np.asarray(reference["stain_std"]))
    in_range = distance <= reference["stain_distance_limit"]
    out.update(blurred_fraction=blurred, stain_distance=distance, stain_in_range=bool(in_range))
    if blurred > 0.25:
        out["warnings"].append(f"{blurred:.0%} of tiles look blurred (out of focus); interpret with care")
    if not in_range:
        out["warnings"].append(
            f"stain differs from the training cohort (distance {distance:.2f} > "
            f"{reference['stain_distance_limit']:.2f}); prediction may be unreliable")
    return out
