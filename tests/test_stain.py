"""Stain normalisation (per-tile Macenko and Reinhard, batched torch) and the HED arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histo_net.stain import (
    lab_to_rgb,
    macenko_normalise,
    normalise_stain,
    reinhard_normalise,
    rgb_to_lab,
)


def _tiles(h_vec: tuple[float, float, float], e_vec: tuple[float, float, float], gain: float,
           n: int = 4, seed: int = 0) -> torch.Tensor:
    """(n,3,64,64) uint8 Beer-Lambert tiles: haematoxylin blobs on eosin, with given stain vectors."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    out = []
    for _ in range(n):
        h = np.zeros((64, 64))
        for cx, cy in rng.uniform(8, 56, (10, 2)):
            h += 1.2 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18.0)
        e = 0.5 + 0.2 * rng.random((64, 64))
        od = gain * (h[..., None] * np.asarray(h_vec) + e[..., None] * np.asarray(e_vec))
        out.append(np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


REF = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11))
SHIFTED = ((0.45, 0.85, 0.27), (0.30, 0.85, 0.45))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalisation_brings_two_stains_closer(method: str) -> None:
    a, b = _tiles(*REF, gain=1.0), _tiles(*SHIFTED, gain=1.6, seed=1)
    before = (a.float().mean((0, 2, 3)) - b.float().mean((0, 2, 3))).abs().sum()
    na, nb = normalise_stain(a, method), normalise_stain(b, method)
    after = (na.mean((0, 2, 3)) - nb.mean((0, 2, 3))).abs().sum()
    assert na.shape == a.shape and na.dtype == torch.float32 and float(na.min()) >= 0 and float(na.max()) <= 255
    assert after < 0.5 * before, (float(before), float(after))


def test_glass_tiles_are_left_alone_and_none_is_identity() -> None:
    glass = torch.full((2, 3, 32, 32), 245, dtype=torch.uint8)
    for fn in (macenko_normalise, reinhard_normalise):
        assert torch.allclose(fn(glass), glass.float())
    tiles = _tiles(*REF, gain=1.0)
    assert torch.equal(normalise_stain(tiles, "none"), tiles.float())
    with pytest.raises(ValueError):
        normalise_stain(tiles, "vahadane")


def test_lab_round_trip() -> None:
    rgb = torch.randint(0, 256, (2, 3, 500), dtype=torch.uint8).float()
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=0.05)
