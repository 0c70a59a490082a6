"""Albumentations presets for tiles: stain jitter (HED, stain vectors in optical density),
grey-world, gamma, blur and JPEG; uint8 CHW conversion happens in the dataset wrapper.

Datasets return uint8 ``(3,H,W)`` tensors; normalisation (and optional stain
normalisation) happens inside the model (:class:`histo_net.models.tile_cnn.TileClassifier`),
so these presets never normalise.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import Field

from histo_net.stain import RGB_FROM_HED, hed_to_rgb, rgb_to_hed

AUGMENTATIONS = ("basic", "strong")


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

    def apply(self, img: np.ndarray, alpha: np.ndarray, beta: np.ndarray, **params: Any) -> np.ndarray:
        """Jitter ``img`` ``(H,W,3)`` uint8 in HED space."""
        hed = rgb_to_hed(img)
        return hed_to_rgb(hed * alpha + beta)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Constructor arguments for serialisation/repr."""
        return ("sigma",)


class StainVectorJitter(A.ImageOnlyTransform):
    """Stain-vector jitter in optical density (in the spirit of RandStainNA).

    The tile is deconvolved with the Ruifrok H, E, DAB vectors and rebuilt with perturbed
    vectors: each H and E vector gets Gaussian noise ``vector_sigma`` per RGB component
    (renormalised to its length) and a log-normal gain ``exp(N(0, gain_sigma))``. This is
    the lab-to-lab variation of stain hue and strength; uint8 RGB in and out.
    """

    class InitSchema(BaseTransformInitSchema):
        vector_sigma: float = Field(ge=0, le=1)
        gain_sigma: float = Field(ge=0, le=2)

    def __init__(self, vector_sigma: float = 0.12, gain_sigma: float = 0.3, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.vector_sigma = vector_sigma
        self.gain_sigma = gain_sigma

    def get_params(self) -> dict[str, Any]:
        """Draw the perturbed (3,3) stain matrix ``rgb_from_hed``."""
        rng = self.random_generator
        m = np.array(RGB_FROM_HED, dtype=np.float64)
        for row in range(2):  # H and E; DAB stays
            length = np.linalg.norm(m[row])
            v = np.clip(m[row] / length + rng.normal(0, self.vector_sigma, 3), 0.02, None)
            m[row] = v / np.linalg.norm(v) * length * np.exp(rng.normal(0, self.gain_sigma))
        return {"rgb_from_hed": m}

    def apply(self, img: np.ndarray, rgb_from_hed: np.ndarray, **params: Any) -> np.ndarray:
        """Rebuild ``img`` (H,W,3) uint8 with the perturbed stain vectors."""
        od = rgb_to_hed(img) @ rgb_from_hed
        return np.clip(np.rint(np.exp(-od) * 255.0), 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Constructor arguments for serialisation/repr."""
        return ("vector_sigma", "gain_sigma")


class RandomGreyWorld(A.ImageOnlyTransform):
    """Random white balance: per-channel gains ``(mean / mean_c) ** s`` with ``s ~ U(lo, hi)``.

    ``s = 1`` is grey-world balancing, ``s = 0`` leaves the tile, negative ``s`` strengthens
    the tile's colour cast (scanner and illumination differences); uint8 RGB in and out.
    """

    class InitSchema(BaseTransformInitSchema):
        strength: tuple[float, float]

    def __init__(self, strength: tuple[float, float] = (-0.5, 1.0), p: float = 0.3) -> None:
        super().__init__(p=p)
        self.strength = strength

    def get_params(self) -> dict[str, Any]:
        """Draw the exponent ``s``."""
        return {"s": float(self.random_generator.uniform(*self.strength))}

    def apply(self, img: np.ndarray, s: float, **params: Any) -> np.ndarray:
        """Apply the gains to ``img`` (H,W,3) uint8."""
        means = img.reshape(-1, 3).mean(axis=0).astype(np.float64) + 1.0
        gains = (means.mean() / means) ** s
        return np.clip(img.astype(np.float64) * gains, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Constructor arguments for serialisation/repr."""
        return ("strength",)


def train_transform(tile_size_px: int, *, stain_jitter: float = 0.05, augmentation: str = "strong",
                    seed: int | None = None) -> A.Compose:
    """Train augmentation, ``(H,W,3)`` uint8.

    ``basic``: resize, flips, rot90, HED jitter (``stain_jitter``), brightness/contrast,
    mild blur, JPEG 60-95. ``strong`` adds stain-vector jitter in optical density, random
    grey-world and gamma, and widens HED (at least 0.1), blur (sigma to 1.5 px) and JPEG (30-95).
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    geometric = [A.Resize(tile_size_px, tile_size_px), A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
                 A.RandomRotate90(p=0.5)]
    if augmentation == "basic":
        colour = [
            HEDJitter(sigma=stain_jitter, p=0.8 if stain_jitter > 0 else 0.0),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 1.0), p=0.2),
            A.ImageCompression(quality_range=(60, 95), p=0.3),
        ]
    else:
        colour = [
            StainVectorJitter(vector_sigma=0.12, gain_sigma=0.3, p=0.8),
            HEDJitter(sigma=max(stain_jitter, 0.1), p=0.5),
            RandomGreyWorld(strength=(-0.5, 1.0), p=0.3),
            A.RandomGamma(gamma_limit=(70, 150), p=0.3),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
            A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.1, 1.5), p=0.3),
            A.ImageCompression(quality_range=(30, 95), p=0.4),
        ]
    return A.Compose([*geometric, *colour], seed=seed)


def eval_transform(tile_size_px: int) -> A.Compose:
    """Evaluation transform: only resize to ``tile_size_px`` (a no-op change when sizes match)."""
    return A.Compose([A.Resize(tile_size_px, tile_size_px)])
