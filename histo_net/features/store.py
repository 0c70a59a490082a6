"""The features h5 (``features/<slide_id>.h5``) and the one embed-and-cache step.

File (DESIGN.md section 3): ``features`` (N,D) float32, ``coords`` (N,2) int64 level-0,
``tile_probs`` (N,C) float32, ``qc`` (N,K) float32; attributes: the cache key
(:class:`FeaturesKey`: encoder hash, tile count, a hash of the coordinates, tile spec) plus
``encoder_name``, ``slide_id`` and extras. :func:`ensure_features` is used by training,
evaluation and anything else that wants cached embeddings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from histo_net.errors import FeaturesFileError
from histo_net.features.embed import SlideEmbedding, embed_slide
from histo_net.io_utils import atomic_path, h5_attr_value
from histo_net.types import Coords
from histo_net.wsi.inputs import SlideSpec
from histo_net.wsi.tiles_file import TilesFile

FEATURES_FORMAT_VERSION = 1


@dataclass(frozen=True)
class FeaturesKey:
    """What must match for a cached features file to be reused."""

    encoder_hash: str
    n_tiles: int
    coords_sha256: str
    target_mpp: float
    tile_size_px: int

    @classmethod
    def for_tiles(cls, encoder_hash: str, tiles: TilesFile) -> FeaturesKey:
        """The key of ``tiles`` embedded by the encoder with ``encoder_hash``."""
        coords = np.ascontiguousarray(tiles.coords, dtype=np.int64)
        return cls(encoder_hash=encoder_hash, n_tiles=tiles.n_tiles,
                   coords_sha256=hashlib.sha256(coords.tobytes()).hexdigest(),
                   target_mpp=float(tiles.plan.target_mpp), tile_size_px=int(tiles.plan.tile_size_px))

    def matches(self, attrs: dict[str, Any]) -> bool:
        """True when a file's attributes carry this key."""
        try:
            return all(type(v)(attrs[k]) == v for k, v in asdict(self).items())
        except (KeyError, TypeError, ValueError):
            return False


def write_features_h5(path: Path, emb: SlideEmbedding, coords: Coords,
                      attrs: dict[str, Any] | None = None) -> None:
    """Atomically write ``features``, ``coords``, ``tile_probs``, ``qc`` and ``attrs`` to ``path``.

    Dict or list attribute values are stored as JSON strings.
    """
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
    try:
        with h5py.File(path, "r") as h5:
            return {key: h5_attr_value(val) for key, val in h5.attrs.items()}
    except (OSError, KeyError, ValueError):
        return {}


def read_features_h5(path: Path) -> tuple[SlideEmbedding, Coords, dict[str, Any]]:
    """``(embedding, coords (N,2) int64, attrs)``; ``FeaturesFileError`` when unreadable."""
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
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FeaturesFileError(f"{path}: not a readable features file ({reason})") from None
    if feats.ndim != 2 or coords.shape != (len(feats), 2) or len(probs) != n or len(qc) != n:
        raise FeaturesFileError(f"{path}: inconsistent shapes features {feats.shape}, coords {coords.shape}")
    return SlideEmbedding(feats, probs, qc), coords, attrs


def ensure_features(path: Path, key: FeaturesKey, encoder: nn.Module, spec: SlideSpec,
                    tiles: TilesFile, *, device: torch.device, batch_size: int,
                    workers: int | None, amp: bool = True,
                    attrs: dict[str, Any] | None = None) -> bool:
    """Embed ``tiles`` of ``spec`` into ``path`` unless a file with ``key`` exists.

    Returns True when it computed (False when the cache was reused).
    """
    if Path(path).is_file() and key.matches(read_features_attrs(path)):
        return False
    emb = embed_slide(encoder, spec.path, tiles.coords, tiles.plan, device=device,
                      batch_size=batch_size, workers=workers, mpp_override=spec.mpp, amp=amp)
    write_features_h5(path, emb, tiles.coords, {**(attrs or {}), **asdict(key),
                                                "slide_id": spec.slide_id})
    return True
