"""Training tile sets: labelled tiles from many slides, augmentation wrapper, balanced sampling.

Tiles are read on the fly through the per-process handle cache of
:mod:`histo_net.features.tiles` (never a pickled slide handle).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from histo_net.features.tiles import HandleCache, Transform, to_chw_tensor
from histo_net.types import Coords, RGBImage
from histo_net.wsi.slide import ReadPlan

logger = logging.getLogger(__name__)


class AlbumentationsTransform:
    """Picklable (H,W,3) uint8 -> (3,H,W) uint8 tensor wrapper around an albumentations pipeline."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def reseed(self, seed: int) -> None:
        """Seed the pipeline's random generators (per DataLoader worker, for reproducibility)."""
        if hasattr(self.pipeline, "set_random_seed"):
            self.pipeline.set_random_seed(int(seed) % (2**32))

    def __call__(self, rgb: RGBImage) -> Tensor:
        out = self.pipeline(image=rgb)["image"]
        return to_chw_tensor(np.asarray(out, dtype=np.uint8))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy, random and the dataset's augmentation per worker.

    Albumentations keeps its own RNG, which every worker would copy unchanged; torch makes
    ``initial_seed()`` distinct per worker and epoch, so reseed everything from it.
    """
    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if isinstance(transform, AlbumentationsTransform):
        transform.reseed(seed)


@dataclass(frozen=True)
class TileSource:
    """Tiles of one slide for :class:`MultiSlideTileDataset`."""

    slide_path: Path
    coords: Coords                    # (N,2) int64 level-0
    plan: ReadPlan
    labels: npt.NDArray[np.int64]     # (N,) int64 tile labels
    mpp_override: float | None = None


def cap_indices(n_tiles: int, cap: int | None, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Sorted random subset of ``range(n_tiles)`` of size ``min(n_tiles, cap)``."""
    if cap is None or n_tiles <= cap:
        return np.arange(n_tiles, dtype=np.int64)
    return np.sort(rng.choice(n_tiles, size=cap, replace=False)).astype(np.int64)


class MultiSlideTileDataset(Dataset):
    """Labelled tiles from many slides (at most ``max_tiles_per_slide`` each, seeded).

    Item ``i`` -> ((3,H,W) uint8 tensor, int tile label). ``labels`` (M,) and
    ``slide_index`` (M,) describe every item, for samplers and per-slide metrics.
    """

    def __init__(self, sources: Sequence[TileSource], transform: Transform | None = None,
                 max_tiles_per_slide: int | None = None, seed: int = 0, max_open: int = 8) -> None:
        rng = np.random.default_rng(seed)
        self.sources = list(sources)
        self.transform = transform
        slide_idx, tile_idx = [], []
        for s, src in enumerate(self.sources):
            keep = cap_indices(len(src.coords), max_tiles_per_slide, rng)
            slide_idx.append(np.full(len(keep), s, dtype=np.int64))
            tile_idx.append(keep)
        self.slide_index = np.concatenate(slide_idx) if slide_idx else np.zeros(0, np.int64)
        self.tile_index = np.concatenate(tile_idx) if tile_idx else np.zeros(0, np.int64)
        self.labels = np.asarray(
            [self.sources[s].labels[t] for s, t in zip(self.slide_index, self.tile_index)],
            dtype=np.int64)
        self._handles = HandleCache(max_open=max_open)

    def __len__(self) -> int:
        return len(self.tile_index)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        src = self.sources[int(self.slide_index[index])]
        x, y = src.coords[int(self.tile_index[index])]
        slide = self._handles.get(src.slide_path, src.mpp_override)
        rgb = slide.read_tile((int(x), int(y)), src.plan)
        tile = self.transform(rgb) if self.transform is not None else to_chw_tensor(rgb)
        return tile, int(self.labels[index])


def balanced_weights(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """(M,) sampling weights ``1 / count(label)`` so every class is drawn equally often."""
    labels = np.asarray(labels, dtype=np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].astype(np.float64)


class BalancedSampler(Sampler[int]):
    """Class-balanced sampling with replacement that also shards across DDP ranks.

    Each epoch draws ``num_samples * world_size`` indices from a generator seeded
    with ``seed + epoch`` (identical on every rank) and gives rank ``r`` every
    ``world_size``-th one, so ranks see disjoint draws. Call ``set_epoch`` per epoch.
    """

    def __init__(self, labels: npt.NDArray[np.int64], num_samples: int, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0) -> None:
        self.weights = torch.as_tensor(balanced_weights(labels), dtype=torch.float64)
        self.num_samples = int(num_samples)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch`` (same on all ranks)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.world_size
        draws = torch.multinomial(self.weights, total, replacement=True, generator=gen)
        return iter(draws[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


def epoch_samples(n_items: int, per_epoch: int | None, batch_size: int) -> int:
    """Samples per epoch: ``per_epoch`` or one pass over ``n_items``, rounded up to whole batches."""
    n = per_epoch if per_epoch is not None else n_items
    return max(batch_size, math.ceil(n / batch_size) * batch_size)
