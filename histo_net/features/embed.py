"""The ONE tile-embedding pass (training stage 2, evaluation and prediction).

One encoder forward per batch yields embeddings (``forward_features``), tile probabilities
(``forward_head`` + softmax) and QC descriptors, on the same uint8 batch. Tiles are read in
DataLoader workers, each with its own slide handle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
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


def prefers_channels_last(encoder: nn.Module) -> bool:
    """True for convolutional encoders: some ``Conv2d`` whose kernel differs from its stride.

    A ViT's patch embedding (kernel = stride) does not count: channels_last only pays for
    real convolution stacks (ResNet, ConvNeXt...). An ``encoder.channels_last`` or
    ``encoder.preset.channels_last`` (registry presets) flag wins.
    """
    for owner in (encoder, getattr(encoder, "preset", None)):
        flag = getattr(owner, "channels_last", None)
        if isinstance(flag, bool):
            return flag
    return any(isinstance(m, nn.Conv2d) and tuple(m.kernel_size) != tuple(m.stride)
               for m in encoder.modules())


class BatchEncoder:
    """The per-batch work of the one encoder pass, set up once per process.

    Eval mode, ``torch.inference_mode``, channels_last for convolutional encoders, autocast
    (bf16 on CUDA and on CPUs with native bf16, see :func:`histo_net.device.amp_dtype`;
    off elsewhere) and, when ``compile`` is set, ``torch.compile`` of the forward.
    QC descriptors are computed on the device from the same uint8 batch.
    """

    def __init__(self, encoder: nn.Module, device: torch.device, *, amp: bool = True,
                 compile: bool = False) -> None:
        self.encoder = encoder.eval()
        self.device = device
        self.amp = amp
        self.channels_last = prefers_channels_last(encoder)
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self._encode = self._encode_eager
        if compile:  # the encoder only: the QC kernels are cheap and stay eager
            self._encode = torch.compile(self._encode_eager, dynamic=False)

    def _encode_eager(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, enabled=self.amp):
            f = self.encoder.forward_features(x)  # (B,D)
            logits = self.encoder.forward_head(f)  # (B,C)
        return f, logits

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,3,H,W) uint8 on the device -> features, probabilities, QC (float32, device)."""
        f, logits = self._encode(x)
        qc = tile_qc_features(x)  # (B,K) on the device, same batch
        return f.float(), torch.softmax(logits.float(), dim=1), qc.float()

    def __call__(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,3,H,W) uint8 tiles (any device) -> features (B,D), softmax probabilities (B,C)
        and QC descriptors (B,K), float32 on the CPU."""
        with torch.inference_mode():
            x = tiles.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            f, p, q = self._forward(x)
            return f.cpu(), p.cpu(), q.cpu()


def empty_embedding(encoder: nn.Module) -> SlideEmbedding:
    """The embedding of a slide without tiles: (0,D), (0,C), (0,0) float32."""
    dim = int(getattr(encoder, "embed_dim", 0))
    n_cls = int(getattr(encoder, "num_classes", 0))
    return SlideEmbedding(np.zeros((0, dim), np.float32), np.zeros((0, n_cls), np.float32),
                          np.zeros((0, 0), np.float32))


def embed_batches(runner: BatchEncoder, batches: Iterable[torch.Tensor],
                  on_batch: Callable[[int], None] | None = None) -> SlideEmbedding:
    """Run ``runner`` over (B,3,H,W) uint8 batches in order and stack the outputs.

    ``on_batch(n_tiles)`` is called after each batch (progress bars, timing).
    """
    feats, probs, qcs = [], [], []
    for tiles in batches:
        f, p, q = runner(tiles)
        feats.append(f)
        probs.append(p)
        qcs.append(q)
        if on_batch is not None:
            on_batch(len(tiles))
    if not feats:
        return empty_embedding(runner.encoder)
    return SlideEmbedding(torch.cat(feats).numpy(), torch.cat(probs).numpy(), torch.cat(qcs).numpy())


def progress_bar(total: int, name: str) -> Any:
    """A tqdm bar over ``total`` tiles (None-disabled when stderr is not a terminal)."""
    from tqdm import tqdm  # deferred: only when a bar is shown

    return tqdm(total=total, desc=name, unit="tile", leave=False,
                disable=None)  # None: no bar when stderr is not a terminal (logs, torchrun)


def embed_slide(
    encoder: nn.Module, slide_path: Path | str, coords: Coords, plan: ReadPlan, *,
    device: torch.device, batch_size: int = 64, workers: int | None = None,
    mpp_override: float | None = None, amp: bool = True, progress: bool = False,
    runner: BatchEncoder | None = None,
) -> SlideEmbedding:
    """Embed every tile at ``coords`` with ``encoder`` (a ``TileClassifier``-like module).

    ``encoder`` provides ``forward_features`` ((B,3,H,W) uint8 -> (B,D)) and ``forward_head``
    ((B,D) -> (B,C)). ``workers`` None = ``min(4, cores)`` capped by the number of batches.
    ``runner``: a prepared :class:`BatchEncoder` (else one is made here, without compile).
    A fresh DataLoader per call: :mod:`histo_net.predict.stream` keeps one across slides.
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    n_batches = -(-len(coords) // batch_size)
    workers = default_workers(n_batches) if workers is None else max(0, int(workers))
    dataset = TileDataset(slide_path, coords, plan, transform=None, mpp_override=mpp_override)
    runner = runner if runner is not None else BatchEncoder(encoder, device, amp=amp)
    loader: Any = _loader(dataset, batch_size, workers, device)
    bar = progress_bar(len(coords), Path(slide_path).name) if progress else None
    tiles = (batch for batch, _ in _batches_or_typed_error(loader, Path(slide_path)))
    try:
        return embed_batches(runner, tiles, None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
