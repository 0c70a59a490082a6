"""Shared state of one training run and the stage fingerprints.

RUN layout: config.yaml, version, splits.csv, tiles/<id>.h5, checkpoints/, logs/ (CSV +
TensorBoard), features/<id>.h5, metrics.json, report.md, roc.png, reliability.png,
model.pt, model_card.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from histo_net.io_utils import safe_child
from histo_net.taxonomy import NON_TUMOUR
from histo_net.train.config import TrainConfig
from histo_net.train.manifest import TrainManifest
from histo_net.wsi.inputs import SlideSpec
from histo_net.wsi.tiles_file import TilesFile

logger = logging.getLogger(__name__)


@dataclass
class SlideTiles:
    """Tiles of one slide with their labels (tile class indices) and tumour membership."""

    slide: SlideSpec
    tiles: TilesFile
    labels: npt.NDArray[np.int64]            # (N,) tile class index
    in_tumour: npt.NDArray[np.bool_] | None  # (N,) centre inside a tumour polygon; None = no annotations


@dataclass
class RunContext:
    """Everything the stages share."""

    out_dir: Path
    cfg: TrainConfig
    manifest: TrainManifest
    split_by_slide: dict[str, str]
    device: torch.device
    workers: int
    rank: int = 0
    world_size: int = 1
    progress: bool = True
    tiles: dict[str, SlideTiles] = field(default_factory=dict)
    tile_class_names_override: list[str] | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @property
    def class_names(self) -> list[str]:
        """Slide classes."""
        return list(self.manifest.class_names)

    @property
    def tile_class_names(self) -> list[str]:
        """``["non_tumour", *classes]`` with annotations, else the slide classes."""
        if self.tile_class_names_override is not None:
            return list(self.tile_class_names_override)
        return [NON_TUMOUR, *self.class_names] if self.manifest.has_annotations else self.class_names

    @property
    def positive_class(self) -> str:
        """The configured positive class when present, else the last class."""
        pos = self.cfg.positive_class
        return pos if pos in self.class_names else self.class_names[-1]

    def path(self, *parts: str) -> Path:
        """A path inside RUN (checked not to escape it)."""
        return safe_child(self.out_dir, *parts)

    def slides_in(self, split: str) -> list[SlideSpec]:
        """Slides of one split, manifest order."""
        return [s for s in self.manifest.slides if self.split_by_slide[s.slide_id] == split]


def fingerprint(*parts: Any) -> str:
    """Short sha256 of JSON-serialisable ``parts`` (stage settings keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage1_fingerprint(ctx: RunContext) -> str:
    """Settings that determine the tile CNN: tiling, CNN section, seed, classes and split."""
    cfg = ctx.cfg
    return fingerprint(cfg.tiling.model_dump(mode="json"), cfg.tile_cnn.model_dump(mode="json"),
                       cfg.seed, ctx.tile_class_names, sorted(ctx.split_by_slide.items()),
                       [str(s.path) for s in ctx.manifest.slides])
