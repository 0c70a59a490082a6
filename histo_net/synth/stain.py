"""Beer-Lambert haematoxylin & eosin stain model with per-slide jitter.

Concentration maps (H, E) become optical density ``OD = cH * h + cE * e + od_bg``
(per RGB channel) and then intensity ``I = 255 * 10**(-OD)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: reference stain OD vectors (RGB, unit norm), close to Macenko's H&E reference
H_REF = np.array([0.5626, 0.7201, 0.4062])
E_REF = np.array([0.2159, 0.8012, 0.5581])


@dataclass(frozen=True)
class StainParams:
    """One slide's stain: OD vectors (3,), concentration gains, glass OD, blur, noise."""

    h_vec: tuple[float, float, float]
    e_vec: tuple[float, float, float]
    h_gain: float
    e_gain: float
    bg_od: tuple[float, float, float]
    noise_std: float
    blur_sigma_um: float


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def sample_stain(rng: np.random.Generator, jitter: float) -> StainParams:
    """Random per-slide stain; ``jitter`` 0 gives the reference, ~0.3 lab-to-lab variation."""
    h = _unit(np.clip(H_REF + rng.normal(0, 0.12 * jitter, 3), 0.05, None))
    e = _unit(np.clip(E_REF + rng.normal(0, 0.15 * jitter, 3), 0.05, None))
    return StainParams(
        h_vec=tuple(float(v) for v in h), e_vec=tuple(float(v) for v in e),
        h_gain=float(np.exp(rng.normal(0, 0.25 * jitter))),
        e_gain=float(np.exp(rng.normal(0, 0.3 * jitter))),
        bg_od=tuple(float(v) for v in np.clip(0.03 + rng.normal(0, 0.015 * jitter, 3), 0.0, 0.1)),
        noise_std=float(2.0 + 2.0 * jitter * rng.random()),
        blur_sigma_um=float(0.2 + 0.3 * jitter * rng.random()),
    )


def reference_stain() -> StainParams:
    """The un-jittered reference stain."""
    return sample_stain(np.random.default_rng(0), 0.0)


def concentrations_to_rgb(h_conc: np.ndarray, e_conc: np.ndarray, stain: StainParams,
                          rng: np.random.Generator | None = None) -> np.ndarray:
    """(H, W) float32 concentrations -> (H, W, 3) uint8 RGB via Beer-Lambert, plus sensor noise."""
    hv = np.asarray(stain.h_vec, np.float32) * stain.h_gain
    ev = np.asarray(stain.e_vec, np.float32) * stain.e_gain
    od = h_conc[..., None] * hv + e_conc[..., None] * ev + np.asarray(stain.bg_od, np.float32)
    rgb = np.float32(255.0) * np.exp(np.float32(-np.log(10.0)) * od)
    if rng is not None and stain.noise_std > 0:
        rgb += np.float32(stain.noise_std) * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
