"""The ONE tile-embedding loop (training stage 2 and prediction) and the features h5 file.

One encoder forward per batch yields embeddings (``forward_features``), tile
probabilities (``forward_head`` + softmax) and QC descriptors, on the same
uint8 batch. Tiles are read in DataLoader workers, each with its own handle.

File ``features/<slide_id>.h5`` (DESIGN.md section 3): ``features`` (N,D)
float32, ``coords`` (N,2) int64 level-0, ``tile_probs`` (N,C) float32,
``qc`` (N,K) float32; attributes ``encoder_name``, ``encoder_hash`` and extras.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from histo_net.errors import HistoNetError
from histo_net.io_utils import atomic_path, h5_attr_value
from histo_net.types import Coords
from histo_net.wsi.slide import ReadPlan

logger = logging.getLogger(__name__)

FEATURES_FORMAT_VERSION = 1


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


@torch.no_grad()
def embed_slide(
    encoder: nn.Module, slide_path: Path | str, coords: Coords, plan: ReadPlan, *,
    device: torch.device, batch_size: int = 64, workers: int | None = None,
    mpp_override: float | None = None, amp: bool = True, progress: bool = False,
) -> SlideEmbedding:
    """Embed every tile at ``coords`` with ``encoder`` (a ``TileClassifier``-like module).

    ``encoder`` must provide ``forward_features`` ((B,3,H,W) uint8 -> (B,D)) and
    ``forward_head`` ((B,D) -> (B,C)); it is put in eval mode and channels_last.
    ``workers`` None = ``min(4, cores)`` capped by the number of batches.
    """
    from histo_net.device import autocast
    from histo_net.features.qc import tile_qc_features
    from histo_net.train.data import TileDataset, default_workers

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
        from tqdm import tqdm

        bar = tqdm(total=len(coords), desc=Path(slide_path).name, unit="tile", leave=False)
    for tiles, _ in batches:
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


def write_features_h5(path: Path, emb: SlideEmbedding, coords: Coords,
                      attrs: dict[str, Any] | None = None) -> None:
    """Atomically write ``features``, ``coords``, ``tile_probs``, ``qc`` and ``attrs`` to ``path``.

    ``attrs`` should name the encoder (``encoder_name``, ``encoder_hash``); dict
    or list values are stored as JSON strings.
    """
    import h5py

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if len(coords) != len(emb.features):
        raise ValueError(f"{len(coords)} coords for {len(emb.features)} feature rows")
    with atomic_path(Path(path)) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=np.asarray(emb.features, np.float32))
        h5.create_dataset("coords", data=coords)
        h5.create_dataset("tile_probs", data=np.asarray(emb.tile_probs, np.float32))
        h5.create_dataset("qc", data=np.asarray(emb.qc, np.float32))
        h5.attrs["format_version"] = FEATURES_FORMAT_VERSION
        for key, value in (attrs or {}).items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


def read_features_attrs(path: Path) -> dict[str, Any]:
    """Only the attributes of a features h5 (cheap cache check); {} when unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return {key: h5_attr_value(val) for key, val in h5.attrs.items()}
    except (OSError, KeyError, ValueError):
        return {}


def read_features_h5(path: Path) -> tuple[SlideEmbedding, Coords, dict[str, Any]]:
    """``(embedding, coords (N,2) int64, attrs)``; ``HistoNetError`` when unreadable or inconsistent."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            feats = np.asarray(h5["features"][()], dtype=np.float32)
            coords = np.asarray(h5["coords"][()], dtype=np.int64)
            n = len(feats)
            probs = (np.asarray(h5["tile_probs"][()], dtype=np.float32) if "tile_probs" in h5
                     else np.zeros((n, 0), np.float32))
            qc = np.asarray(h5["qc"][()], dtype=np.float32) if "qc" in h5 else np.zeros((n, 0), np.float32)
            attrs = {key: h5_attr_value(val) for key, val in h5.attrs.items()}
    except (OSError, KeyError, ValueError) as exc:
        raise HistoNetError(f"{path}: not a readable features file ({str(exc).splitlines()[0]})") from None
    if feats.ndim != 2 or coords.shape != (len(feats), 2) or len(probs) != n or len(qc) != n:
        raise HistoNetError(f"{path}: inconsistent shapes features {feats.shape}, coords {coords.shape}")
    return SlideEmbedding(feats, probs, qc), coords, attrs
