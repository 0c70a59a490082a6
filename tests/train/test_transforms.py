"""Tile augmentation presets and the HED stain model."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from histo_net.features.tiles import to_chw_tensor
from histo_net.stain import hed_to_rgb, rgb_to_hed
from histo_net.train.data import AlbumentationsTransform, seed_worker
from histo_net.train.transforms import HEDJitter, eval_transform, train_transform


def _he_tile(size: int = 48) -> np.ndarray:
    tile = np.full((size, size, 3), (235, 190, 220), dtype=np.uint8)  # eosin-ish background
    tile[: size // 2, : size // 2] = (80, 50, 150)  # haematoxylin-ish nuclei
    return tile


def test_hed_round_trip_and_identity_jitter() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.abs(hed_to_rgb(rgb_to_hed(rgb)).astype(int) - rgb).max() <= 1
    jitter = HEDJitter(sigma=0.0, p=1.0)
    assert np.abs(jitter(image=rgb)["image"].astype(int) - rgb).max() <= 1


def test_hed_jitter_changes_colour_mildly() -> None:
    tile = _he_tile()
    out = HEDJitter(sigma=0.05, p=1.0)(image=tile)["image"]
    diff = np.abs(out.astype(int) - tile.astype(int))
    assert out.dtype == np.uint8 and out.shape == tile.shape
    assert 0 < diff.mean() < 30
    white = np.full((4, 4, 3), 255, np.uint8)  # no stain: jitter scale cannot darken much
    assert HEDJitter(sigma=0.05, p=1.0)(image=white)["image"].min() > 150


@pytest.mark.parametrize("in_size", [48, 64])
def test_presets_resize_and_keep_uint8(in_size: int) -> None:
    tile = np.random.default_rng(1).integers(0, 256, (in_size, in_size, 3), dtype=np.uint8)
    for tf in (train_transform(32), eval_transform(32)):
        out = tf(image=tile)["image"]
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    same = eval_transform(in_size)(image=tile)["image"]
    assert np.array_equal(same, tile)


def test_train_transform_is_random() -> None:
    tile = _he_tile(32)
    tf = train_transform(32)
    outs = {tf(image=tile)["image"].tobytes() for _ in range(8)}
    assert len(outs) > 1


def test_to_chw_tensor() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    chw = to_chw_tensor(rgb)
    assert chw.shape == (3, 2, 3) and chw.dtype == torch.uint8 and chw.is_contiguous()
    assert chw[1, 0, 2] == rgb[0, 2, 1]
    view = np.ascontiguousarray(rgb)[:, ::-1]  # a negative-stride view must be copied, not shared
    assert torch.equal(to_chw_tensor(view), torch.from_numpy(view.copy()).permute(2, 0, 1))


class _AugDataset(torch.utils.data.Dataset):
    """One fixed tile, augmented on every access."""

    def __init__(self) -> None:
        self.tile = _he_tile(32)
        self.transform = AlbumentationsTransform(train_transform(32, seed=0))

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.tile)


def test_seed_worker_gives_workers_distinct_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker copies of one Compose share its RNG; seed_worker reseeds them per worker seed."""
    copies = [copy.deepcopy(_AugDataset()) for _ in range(2)]  # what each worker receives
    assert copies[0][0].numpy().tobytes() == copies[1][0].numpy().tobytes()
    outputs = []
    for worker_seed, dataset in zip((10, 11, 10), [*copies, _AugDataset()], strict=True):
        info = types.SimpleNamespace(dataset=dataset, id=0)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        torch.manual_seed(worker_seed)  # torch sets a distinct initial seed in each worker
        seed_worker(0)
        outputs.append(dataset[0].numpy().tobytes())
    assert outputs[0] != outputs[1]  # different workers augment differently
    assert outputs[0] == outputs[2]  # and reproducibly for the same worker seed
    a = train_transform(32, seed=3)(image=_he_tile(32))["image"]
    b = train_transform(32, seed=3)(image=_he_tile(32))["image"]
    assert np.array_equal(a, b)  # a seeded preset is reproducible


def test_stain_vector_jitter_changes_hue_and_keeps_glass_white() -> None:
    from histo_net.train.transforms import StainVectorJitter

    tile = _he_tile()
    outs = [StainVectorJitter(vector_sigma=0.12, gain_sigma=0.3, p=1.0)(image=tile)["image"] for _ in range(6)]
    assert all(o.dtype == np.uint8 and o.shape == tile.shape for o in outs)
    nuclei = np.stack([o[: 24, : 24].reshape(-1, 3).mean(0) for o in outs])
    assert nuclei.std(axis=0).max() > 5  # stain colour varies between draws
    white = np.full((8, 8, 3), 255, np.uint8)
    assert StainVectorJitter(p=1.0)(image=white)["image"].min() >= 250  # no stain stays glass


def test_grey_world_balances_a_colour_cast() -> None:
    from histo_net.train.transforms import RandomGreyWorld

    cast = np.zeros((8, 8, 3), np.uint8) + np.array([200, 120, 160], np.uint8)
    out = RandomGreyWorld(strength=(1.0, 1.0), p=1.0)(image=cast)["image"].reshape(-1, 3).mean(0)
    assert np.ptp(out) < 0.2 * np.ptp(cast.reshape(-1, 3).mean(0))


def test_strong_preset_varies_colour_more_than_basic() -> None:
    tile = _he_tile(32)

    def spread(preset: str) -> float:
        tf = train_transform(32, augmentation=preset, seed=3)
        means = np.stack([tf(image=tile)["image"].reshape(-1, 3).mean(0) for _ in range(40)])
        return float(means.std(axis=0).mean())

    assert spread("strong") > 1.3 * spread("basic")
    with pytest.raises(ValueError):
        train_transform(32, augmentation="extreme")
