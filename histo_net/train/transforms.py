"""Albumentations presets for tiles; HED stain jitter; uint8 CHW conversion.

Datasets return uint8 ``(3,H,W)`` tensors; normalisation happens inside the
model (:class:`histo_net.models.tile_cnn.TileClassifier`), so these presets never
normalise.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import torch
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field

# Ruifrok & Johnston (2001) stain vectors: rows are H, E, DAB optical densities in RGB.
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
    od = -np.log(rgb01)  # optical density (natural log), white = 0
    return od @ hed_from_rgb


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """``(H,W,3)`` float HED concentrations -> ``(H,W,3)`` uint8 RGB."""
    od = hed @ RGB_FROM_HED
    rgb01 = np.exp(-od)
    return np.clip(np.rint(rgb01 * 255.0), 0, 255).astype(np.uint8)


class HEDJitter(A.ImageOnlyTransform):
    """Tellez-style stain augmentation: each HED channel ``s -> s * a + b``.

    ``a ~ U(1 - sigma, 1 + sigma)``, ``b ~ U(-sigma, sigma)`` per channel; uint8 RGB in and out.
    """

    class InitSchema(BaseTransformInitSchema):
        sigma: float = Field(ge=0, le=1)

    def __init__(self, sigma: float = 0.05, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.sigma = sigma

    def get_params(self) -> dict[str, Any]:
        """Draw per-channel scale ``alpha`` (3,) and shift ``beta`` (3,)."""
        rng = self.random_generator
        return {
            "alpha": rng.uniform(1.0 - self.sigma, 1.0 + self.sigma, size=3),
            "beta": rng.uniform(-self.sigma, self.sigma, size=3),
        }

    def apply(
        self, img: np.ndarray, alpha: np.ndarray, beta: np.ndarray, **params: Any
    ) -> np.ndarray:
        """Jitter ``img`` ``(H,W,3)`` uint8 in HED space."""
        hed = rgb_to_hed(img)
        return hed_to_rgb(hed * alpha + beta)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Constructor arguments for serialisation/repr."""
        return ("sigma",)


def train_transform(
    tile_size_px: int, *, stain_jitter: float = 0.05, seed: int | None = None
) -> A.Compose:
    """Train augmentation, ``(H,W,3)`` uint8: resize, flips, rot90, HED, B/C, blur, JPEG."""
    return A.Compose(
        [
            A.Resize(tile_size_px, tile_size_px),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            HEDJitter(sigma=stain_jitter, p=0.8 if stain_jitter > 0 else 0.0),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 1.0), p=0.2),
            A.ImageCompression(quality_range=(60, 95), p=0.3),
        ],
        seed=seed,
    )


def eval_transform(tile_size_px: int) -> A.Compose:
    """Evaluation transform: only resize to ``tile_size_px`` (a no-op change when sizes match)."""
    return A.Compose([A.Resize(tile_size_px, tile_size_px)])


def to_chw_uint8(rgb: np.ndarray) -> torch.Tensor:
    """``(H,W,3)`` uint8 -> ``(3,H,W)`` uint8 tensor (contiguous copy)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H,W,3) uint8, got {rgb.shape} {rgb.dtype}")
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: distinct, reproducible augmentation per worker.

    Albumentations ``Compose`` keeps its own RNG, which every worker would copy
    unchanged (identical augmentations in all workers). This reseeds python,
    numpy and the dataset's ``transform`` (if it has ``set_random_seed``) from
    ``torch.initial_seed()``, which torch makes distinct per worker and per epoch.
    """
    import random

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
