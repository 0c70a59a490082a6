"""The ONE tile-embedding pass (training stage 2, evaluation and prediction).

One encoder forward per batch yields embeddings (``forward_features``), tile probabilities
(``forward_head`` + softmax) and QC descriptors, on the same uint8 batch. Tiles are read in
DataLoader workers, each with its own slide handle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from histo_net.device import autocast
from histo_net.errors import HistoNetError, SlideReadError
from histo_net.features.qc import tile_qc_features
from histo_net.features.tiles import TileDataset, default_workers
from histo_net.types import Coords
from histo_net.wsi.slide import ReadPlan

logger = logging.getLogger(__name__)


@dataclass
class SlideEmbedding:
    """Per-tile outputs of one encoder pass over a slide's tiles (row order = coords order)."""

    features: npt.NDArray[np.float32]    # (N,D)
    tile_probs: npt.NDArray[np.float32]  # (N,C) softmax
    qc: npt.NDArray[np.float32]          # (N,K) see histo_net.features.qc.QC_FEATURE_NAMES


def _loader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int,
            device: torch.device) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None)


def worker_message(exc: BaseException) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker.

    torch re-raises a worker's exception with the worker's whole traceback as its message
    ("Caught X in DataLoader worker process 0. Original Traceback ...": the last line is
    ``module.X: message``); this returns ``message`` (or the text as is).
    """
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    head, sep, tail = last.partition(": ")
    return tail if sep and re.fullmatch(r"[A-Za-z_][\w.]*", head) else last


def _batches_or_typed_error(batches: Iterable[Any], slide_path: Path) -> Iterator[Any]:
    """Iterate a DataLoader; worker errors come back as the same typed one-liners as
    main-process errors (a dead worker: ``SlideReadError`` naming the file)."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except HistoNetError as exc:
            raise type(exc)(worker_message(exc)) from None
        except Exception as exc:  # noqa: BLE001  e.g. "DataLoader worker (pid N) is killed by signal"
            text = (worker_message(exc).strip().splitlines() or [""])[0]
            raise SlideReadError(f"{slide_path}: reading tiles failed ({type(exc).__name__}: "
                                 f"{text})") from None
        yield batch


@torch.no_grad()
def embed_slide(
    encoder: nn.Module, slide_path: Path | str, coords: Coords, plan: ReadPlan, *,
    device: torch.device, batch_size: int = 64, workers: int | None = None,
    mpp_override: float | None = None, amp: bool = True, progress: bool = False,
) -> SlideEmbedding:
    """Embed every tile at ``coords`` with ``encoder`` (a ``TileClassifier``-like module).

    ``encoder`` provides ``forward_features`` ((B,3,H,W) uint8 -> (B,D)) and ``forward_head``
    ((B,D) -> (B,C)); it is put in eval mode and channels_last. ``workers`` None =
    ``min(4, cores)`` capped by the number of batches.
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    n_batches = -(-len(coords) // batch_size)
    workers = default_workers(n_batches) if workers is None else max(0, int(workers))
    dataset = TileDataset(slide_path, coords, plan, transform=None, mpp_override=mpp_override)
    encoder.eval()
    encoder.to(memory_format=torch.channels_last)
    feats, probs, qcs = [], [], []
    batches: Any = _loader(dataset, batch_size, workers, device)
    bar = None
    if progress:
        from tqdm import tqdm  # deferred: only when a bar is shown

        bar = tqdm(total=len(coords), desc=Path(slide_path).name, unit="tile", leave=False,
                   disable=None)  # None: no bar when stderr is not a terminal (logs, torchrun)
    for tiles, _ in _batches_or_typed_error(batches, Path(slide_path)):
        x = tiles.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, enabled=amp):
            f = encoder.forward_features(x)  # (B,D)
            logits = encoder.forward_head(f)  # (B,C)
        feats.append(f.float().cpu())
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        qcs.append(tile_qc_features(x).float().cpu())  # (B,K)
        if bar is not None:
            bar.update(len(tiles))
    if bar is not None:
        bar.close()
    if not feats:
        dim = int(getattr(encoder, "embed_dim", 0))
        n_cls = int(getattr(encoder, "num_classes", 0))
        return SlideEmbedding(np.zeros((0, dim), np.float32), np.zeros((0, n_cls), np.float32),
                              np.zeros((0, 0), np.float32))
    return SlideEmbedding(torch.cat(feats).numpy(), torch.cat(probs).numpy(),
                          torch.cat(qcs).numpy())
