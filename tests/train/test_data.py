"""Tile datasets (lazy per-process slide handles), balanced sampling, bags + collate."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_net.features.tiles import TileDataset
from histo_net.train.data import BalancedSampler, MultiSlideTileDataset, TileSource, cap_indices
from histo_net.train.mil import BagDataset, collate_bags
from histo_net.wsi.slide import open_slide


@pytest.fixture()
def png_slide(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    return path


def test_tile_dataset_reads_lazily_and_pickles(png_slide: Path) -> None:
    with open_slide(png_slide, mpp_override=0.5) as slide:
        plan = slide.read_plan(0.5, 32)
        expected = slide.read_tile((32, 64), plan)
    coords = np.array([[0, 0], [32, 64], [96, 32]], dtype=np.int64)
    ds = TileDataset(png_slide, coords, plan, mpp_override=0.5, labels=np.array([0, 1, 1]))
    assert ds._handles._open == {}  # nothing opened in the parent
    tile, label = ds[1]
    assert tile.dtype == torch.uint8 and tile.shape == (3, 32, 32) and label == 1
    assert np.array_equal(tile.permute(1, 2, 0).numpy(), expected)
    clone = pickle.loads(pickle.dumps(ds))  # open handle is not pickled
    assert clone._handles._open == {}
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    tiles = torch.cat([b[0] for b in loader])
    assert tiles.shape == (3, 3, 32, 32) and torch.equal(tiles[1], tile)


def test_multi_slide_cap_and_labels(png_slide: Path) -> None:
    with open_slide(png_slide, mpp_override=0.5) as slide:
        plan = slide.read_plan(0.5, 16)
    coords = np.stack(np.meshgrid(np.arange(0, 128, 16), np.arange(0, 96, 16)), -1).reshape(-1, 2)
    src_a = TileSource(png_slide, coords, plan, np.zeros(len(coords), np.int64), 0.5)
    src_b = TileSource(png_slide, coords[:5], plan, np.ones(5, np.int64), 0.5)
    ds = MultiSlideTileDataset([src_a, src_b], max_tiles_per_slide=10, seed=0)
    assert len(ds) == 15 and ds.labels.tolist() == [0] * 10 + [1] * 5
    assert ds.slide_index.tolist() == [0] * 10 + [1] * 5
    tile, label = ds[12]
    assert tile.shape == (3, 16, 16) and label == 1
    assert len(set(cap_indices(100, 10, np.random.default_rng(1)).tolist())) == 10


def test_balanced_sampler_balances_and_shards() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    draws = list(BalancedSampler(labels, 2000, seed=3))
    frac_minority = np.mean(labels[draws] == 1)
    assert 0.4 < frac_minority < 0.6  # unbalanced would be ~0.1
    ranks = [BalancedSampler(labels, 50, rank=r, world_size=2, seed=3) for r in range(2)]
    both = [list(s) for s in ranks]
    whole = torch.multinomial(ranks[0].weights, 100, replacement=True,
                              generator=torch.Generator().manual_seed(3)).tolist()
    assert both[0] == whole[0::2] and both[1] == whole[1::2]
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != both[0]


def test_bags_and_collate() -> None:
    feats = [torch.arange(20.0).reshape(5, 4), 2 * torch.ones((2, 4))]
    ds = BagDataset(feats, [0, 1], max_tiles=3, seed=0)
    assert ds[0][0].shape == (3, 4) and ds[1][0].shape == (2, 4)
    first = ds[0][0]
    assert torch.equal(first, ds[0][0])  # same epoch: same draw
    ds.set_epoch(1)
    draws = {tuple(ds[0][0][:, 0].tolist()) for _ in range(1)}
    ds.set_epoch(2)
    draws.add(tuple(ds[0][0][:, 0].tolist()))
    assert len(draws | {tuple(first[:, 0].tolist())}) > 1  # epochs draw different subsets
    (bags, mask), labels = collate_bags([BagDataset(feats, [0, 1])[i] for i in range(2)])
    assert bags.shape == (2, 5, 4) and mask.sum(1).tolist() == [5, 2]
    assert labels.tolist() == [0, 1]
    assert float(bags[1, 2:].abs().sum()) == 0.0
