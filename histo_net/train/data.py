"""Datasets: tiles read on the fly from slides, labelled multi-slide tile sets, MIL bags.

Slide handles are opened lazily inside the process that reads (a DataLoader
worker, or the main process with ``num_workers=0``), never pickled: the handle
cache is dropped on pickling and rebuilt when the process id changes.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from histo_net.types import Coords, RGBImage
from histo_net.wsi.slide import ReadPlan, Slide

logger = logging.getLogger(__name__)

Transform = Callable[[RGBImage], Tensor]
NO_LABEL = -1


def to_chw_tensor(rgb: RGBImage) -> Tensor:
    """(H,W,3) uint8 -> (3,H,W) uint8 contiguous tensor (no augmentation)."""
    return torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1).contiguous()


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
    """DataLoader ``worker_init_fn``: seed numpy, random and the dataset's augmentation per worker."""
    import random

    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if isinstance(transform, AlbumentationsTransform):
        transform.reseed(seed)


def default_workers(n_items: int | None = None, cap: int = 4) -> int:
    """``min(cap, cores)`` DataLoader workers, at most one per ``n_items`` batch when given."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cap, cores)
    return max(0, min(workers, n_items)) if n_items is not None else workers


class _HandleCache:
    """Per-process LRU of open slides; empty after unpickling or a fork."""

    def __init__(self, max_open: int = 8) -> None:
        self.max_open = max_open
        self._pid = os.getpid()
        self._open: OrderedDict[str, Slide] = OrderedDict()

    def get(self, path: Path, mpp_override: float | None) -> Slide:
        from histo_net.wsi.slide import open_slide

        if self._pid != os.getpid():  # forked copy: never reuse the parent's handles
            self._open = OrderedDict()
            self._pid = os.getpid()
        key = str(path)
        slide = self._open.get(key)
        if slide is None:
            slide = open_slide(path, mpp_override=mpp_override, require_mpp=False)
            self._open[key] = slide
            while len(self._open) > self.max_open:
                _, old = self._open.popitem(last=False)
                old.close()
        else:
            self._open.move_to_end(key)
        return slide

    def close(self) -> None:
        for slide in self._open.values():
            slide.close()
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_open"])  # type: ignore[misc]


class TileDataset(Dataset):
    """Tiles of ONE slide: item ``i`` -> ((3,H,W) uint8 tensor, int label or -1)."""

    def __init__(self, slide_path: Path | str, coords: Coords, plan: ReadPlan,
                 transform: Transform | None = None, mpp_override: float | None = None,
                 labels: npt.NDArray[np.int64] | None = None) -> None:
        self.slide_path = Path(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.plan = plan
        self.transform = transform
        self.mpp_override = mpp_override
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.coords):
            raise ValueError(f"{len(self.labels)} labels for {len(self.coords)} tiles")
        self._handles = _HandleCache(max_open=1)

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        slide = self._handles.get(self.slide_path, self.mpp_override)
        x, y = self.coords[index]
        rgb = slide.read_tile((int(x), int(y)), self.plan)
        tile = self.transform(rgb) if self.transform is not None else to_chw_tensor(rgb)
        label = int(self.labels[index]) if self.labels is not None else NO_LABEL
        return tile, label


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
        self._handles = _HandleCache(max_open=max_open)

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


class BagDataset(Dataset):
    """MIL bags: item ``i`` -> ((N_i,D) float32 tensor, int slide label, i).

    With ``max_tiles`` and ``training=True`` a random subset of at most
    ``max_tiles`` tiles is drawn per access (bag sub-sampling); evaluation uses all.
    """

    def __init__(self, features: Sequence[npt.NDArray[np.floating]], labels: Sequence[int],
                 max_tiles: int | None = None, training: bool = False, seed: int = 0) -> None:
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} bags for {len(labels)} labels")
        self.features = [np.asarray(f, dtype=np.float32) for f in features]
        self.labels = [int(v) for v in labels]
        self.max_tiles = max_tiles
        self.training = training
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        feats = self.features[index]
        if self.training and self.max_tiles is not None and len(feats) > self.max_tiles:
            keep = self._rng.choice(len(feats), size=self.max_tiles, replace=False)
            feats = feats[np.sort(keep)]
        return torch.from_numpy(np.ascontiguousarray(feats)), self.labels[index], index


def collate_bags(batch: list[tuple[Tensor, int, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pad bags -> (bags (B,Nmax,D) float32, mask (B,Nmax) bool, labels (B,) int64, index (B,))."""
    n_max = max(int(b[0].shape[0]) for b in batch)
    dim = int(batch[0][0].shape[1])
    bags = torch.zeros((len(batch), n_max, dim), dtype=torch.float32)  # (B,Nmax,D)
    mask = torch.zeros((len(batch), n_max), dtype=torch.bool)  # (B,Nmax)
    for i, (feats, _, _) in enumerate(batch):
        bags[i, : feats.shape[0]] = feats
        mask[i, : feats.shape[0]] = True
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)  # (B,)
    index = torch.tensor([b[2] for b in batch], dtype=torch.int64)  # (B,)
    return bags, mask, labels, index


def epoch_samples(n_items: int, per_epoch: int | None, batch_size: int) -> int:
    """Samples per epoch: ``per_epoch`` or one pass over ``n_items``, rounded up to whole batches."""
    n = per_epoch if per_epoch is not None else n_items
    return max(batch_size, math.ceil(n / batch_size) * batch_size)
