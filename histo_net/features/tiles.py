"""Tiles of one slide read on the fly: the dataset the one encoder pass iterates over.

Slide handles are opened lazily inside the process that reads (a DataLoader worker, or the
main process with ``num_workers=0``), never pickled: the handle cache is dropped on
pickling and rebuilt when the process id changes. Every read error becomes a one-line
typed ``HistoNetError`` naming the file and tile, in workers as in the main process.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import Dataset

from histo_net.errors import HistoNetError, SlideReadError
from histo_net.types import Coords, RGBImage
from histo_net.wsi.slide import ReadPlan, Slide, open_slide

Transform = Callable[[RGBImage], Tensor]
NO_LABEL = -1


def to_chw_tensor(rgb: RGBImage) -> Tensor:
    """(H,W,3) uint8 -> (3,H,W) uint8 contiguous tensor (no augmentation)."""
    return torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1).contiguous()


def default_workers(n_items: int | None = None, cap: int = 4) -> int:
    """``min(cap, cores)`` DataLoader workers, at most one per ``n_items`` batch when given."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cap, cores)
    return max(0, min(workers, n_items)) if n_items is not None else workers


class HandleCache:
    """Per-process LRU of open slides; empty after unpickling or a fork."""

    def __init__(self, max_open: int = 8) -> None:
        self.max_open = max_open
        self._pid = os.getpid()
        self._open: OrderedDict[str, Slide] = OrderedDict()

    def get(self, path: Path, mpp_override: float | None) -> Slide:
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
        self._handles = HandleCache(max_open=1)

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, y = (int(v) for v in self.coords[index])
        try:
            slide = self._handles.get(self.slide_path, self.mpp_override)
            rgb = slide.read_tile((x, y), self.plan)
            tile = self.transform(rgb) if self.transform is not None else to_chw_tensor(rgb)
        except HistoNetError:
            raise
        except Exception as exc:  # noqa: BLE001  any reader/transform error: one typed line
            text = (str(exc).strip().splitlines() or [""])[0]
            raise SlideReadError(f"{self.slide_path}: cannot read the tile at ({x}, {y}) "
                                 f"({type(exc).__name__}: {text})") from None
        label = int(self.labels[index]) if self.labels is not None else NO_LABEL
        return tile, label
