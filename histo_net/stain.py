"""H&E stain arithmetic shared by QC and augmentation: optical density and Ruifrok deconvolution.

Ruifrok & Johnston (2001) stain vectors, as in ``skimage.color.rgb2hed``: rows are the
H, E and DAB optical densities in RGB. Natural-log optical density, white = 0.
"""

from __future__ import annotations

import numpy as np
import torch

#: (3,3) rows H, E, DAB: optical density per RGB channel (not normalised)
RGB_FROM_HED: np.ndarray = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_OD_EPS = 1e-6


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """``(H,W,3)`` uint8 RGB -> ``(H,W,3)`` float64 HED stain concentrations.

    Not clipped at 0 (unlike skimage), so ``hed_to_rgb(rgb_to_hed(x)) == x`` up to rounding.
    """
    hed_from_rgb = np.linalg.inv(RGB_FROM_HED)
    rgb01 = np.maximum(rgb.astype(np.float64) / 255.0, _OD_EPS)
    od = -np.log(rgb01)  # (H,W,3) optical density, white = 0
    return od @ hed_from_rgb


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """``(H,W,3)`` float HED concentrations -> ``(H,W,3)`` uint8 RGB."""
    od = hed @ RGB_FROM_HED
    return np.clip(np.rint(np.exp(-od) * 255.0), 0, 255).astype(np.uint8)


def hed_from_od_matrix(device: torch.device) -> torch.Tensor:
    """(3,3) float32 matrix M with unit-norm stain rows: ``od_row @ M -> hed_row`` on ``device``."""
    rgb_from_hed = torch.tensor(RGB_FROM_HED, dtype=torch.float32, device=device)
    rgb_from_hed = rgb_from_hed / rgb_from_hed.norm(dim=1, keepdim=True)
    return torch.linalg.inv(rgb_from_hed)
