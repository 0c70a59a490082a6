"""Albumentations presets for tiles; HED stain jitter; uint8 CHW conversion.

Datasets return uint8 ``(3,H,W)`` tensors; normalisation happens inside the
model (:class:`histo_net.models.tile_cnn.TileClassifier`), so these presets never
normalise.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field

from histo_net.stain import hed_to_rgb, rgb_to_hed


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
