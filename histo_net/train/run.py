"""Entry points: ``run_training`` (manifest -> RUN with model.pt) and ``evaluate_bundle``.

Under torchrun, every rank calls ``run_training``; the process group is set up
from the environment, stage 1 uses DDP, stages 0 and 2 are sharded, and rank 0
alone writes shared files and runs stage 3.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_net.errors import ConfigError
from histo_net.io_utils import atomic_write_text
from histo_net.train.config import TrainConfig
from histo_net.train.context import RunContext

logger = logging.getLogger(__name__)

STAGES = ("tiles", "features", "mil", "all")


def _seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _workers(workers: int | None, world_size: int) -> int:
    from histo_net.train.data import default_workers

    if workers is not None:
        if workers < 0:
            raise ConfigError(f"--workers {workers}: must be >= 0")
        return workers
    return max(1, default_workers() // world_size)


def _write_run_files(ctx: RunContext) -> None:
    from histo_net import __version__
    from histo_net.config import to_yaml
    from histo_net.train.splits import write_splits_csv

    atomic_write_text(ctx.path("config.yaml"), to_yaml(ctx.cfg))
    atomic_write_text(ctx.path("version"), f"histo-net {__version__}\n")
    write_splits_csv(ctx.path("splits.csv"), ctx.manifest.slides, ctx.split_by_slide)


def run_training(manifest: Path, out_dir: Path, cfg: TrainConfig, *, stage: str = "all",
                 resume: bool = False, device: str = "auto", workers: int | None = None,
                 progress: bool = True) -> Path:
    """Train tile CNN + MIL from ``manifest`` into ``out_dir``; returns ``out_dir/model.pt``.

    ``stage``: "tiles" (tiling + tile CNN), "features", "mil" (MIL, calibration,
    evaluation, bundle) or "all". ``resume`` continues stage 1 from its per-epoch
    checkpoint. Raises ``ConfigError`` on manifest/config problems before any tile is read.
    """
    from histo_net import distributed as dist
    from histo_net.device import select_device
    from histo_net.train.manifest import validate_manifest
    from histo_net.train.slide_model import stage_mil
    from histo_net.train.splits import patient_splits, slide_splits
    from histo_net.train.stages import (
        load_trained_encoder,
        stage_features,
        stage_tile_cnn,
        stage_tiles,
    )

    if stage not in STAGES:
        raise ConfigError(f"--stage {stage}: expected one of {', '.join(STAGES)}")
    manifest, out_dir = Path(manifest), Path(out_dir)
    tm = validate_manifest(manifest, cfg.classes)
    if cfg.positive_class is not None and cfg.positive_class not in tm.class_names:
        logger.warning("positive_class '%s' is not a class; using '%s'", cfg.positive_class,
                       tm.class_names[-1])
    dev = select_device(device)
    if dist.launched_by_torchrun() and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank())
    dist.init_distributed(dev)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        _seed_everything(cfg.seed, cfg.deterministic, dev)
        by_patient = patient_splits(tm.slides, val_fraction=cfg.split.val_fraction,
                                    test_fraction=cfg.split.test_fraction, seed=cfg.seed,
                                    k_folds=cfg.split.k_folds, fold=cfg.split.fold)
        ctx = RunContext(out_dir=out_dir, cfg=cfg, manifest=tm,
                         split_by_slide=slide_splits(tm.slides, by_patient), device=dev,
                         workers=_workers(workers, world), rank=rank, world_size=world,
                         progress=progress)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_run_files(ctx)
        dist.barrier()
        stage_tiles(ctx)
        if stage in ("tiles", "all"):
            stage_tile_cnn(ctx, resume=resume)
        if stage in ("features", "all"):
            stage_features(ctx)
        bundle_path = ctx.path("model.pt")
        if stage in ("mil", "all"):
            if ctx.is_main:
                _, cnn_ckpt, enc_hash = load_trained_encoder(ctx)
                stage_mil(ctx, enc_hash, cnn_ckpt)
            dist.barrier()
        return bundle_path
    finally:
        dist.cleanup()


def config_from_bundle(training_config: dict[str, Any], target_mpp: float, tile_size_px: int) -> TrainConfig:
    """The bundle's training config (unknown keys dropped) with its tile spec enforced."""
    from histo_net.config import build_config

    data = {k: v for k, v in training_config.items() if k in TrainConfig.model_fields}
    tiling = dict(data.get("tiling") or {})
    tiling.update(target_mpp=float(target_mpp), tile_size_px=int(tile_size_px))
    data["tiling"] = tiling
    data["classes"] = None
    return build_config(TrainConfig, data, source="bundle training_config")


def evaluate_bundle(bundle_path: Path, manifest: Path, out_dir: Path, *, device: str = "auto",
                    workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate a bundle on a labelled manifest; writes metrics.json, report.md and plots to ``out_dir``.

    Tiles go to ``out_dir/tiles`` and features to ``out_dir/features`` (cache keyed
    by the bundle's encoder hash). Returns the metrics dict.
    """
    from histo_net.device import select_device
    from histo_net.features.embed import embed_slide, write_features_h5
    from histo_net.models.bundle import load_bundle
    from histo_net.train.evaluation import compute_metrics, write_evaluation
    from histo_net.train.manifest import validate_manifest
    from histo_net.train.slide_model import eval_set, load_embeddings
    from histo_net.train.stages import features_match, features_path, stage_tiles

    bundle = load_bundle(Path(bundle_path))
    tm = validate_manifest(Path(manifest), bundle.class_names, require_two_classes=False)
    cfg = config_from_bundle(bundle.training_config, bundle.target_mpp, bundle.tile_size_px)
    dev = select_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(out_dir=out_dir, cfg=cfg, manifest=tm,
                     split_by_slide={s.slide_id: "test" for s in tm.slides}, device=dev,
                     workers=_workers(workers, 1), progress=progress,
                     tile_class_names_override=list(bundle.tile_class_names))
    stage_tiles(ctx)
    encoder = bundle.build_encoder(dev)
    enc_hash = bundle.encoder_hash()
    for slide in tm.slides:
        tiles = ctx.tiles[slide.slide_id]
        path = features_path(ctx, slide.slide_id)
        if not features_match(path, enc_hash, len(tiles.coords)):
            emb = embed_slide(encoder, slide.path, tiles.coords, tiles.plan, device=dev,
                              batch_size=cfg.features.batch_size, workers=ctx.workers,
                              mpp_override=slide.mpp, amp=cfg.tile_cnn.amp)
            write_features_h5(path, emb, tiles.coords, {
                "encoder_name": bundle.encoder_name, "encoder_hash": enc_hash,
                "n_tiles": len(tiles.coords), "slide_id": slide.slide_id})
    embs = load_embeddings(ctx, enc_hash)
    ev = eval_set(ctx, list(tm.slides), embs, bundle.build_mil(dev))
    metrics = compute_metrics(
        ev, class_names=list(bundle.class_names), tile_class_names=list(bundle.tile_class_names),
        positive_class=bundle.positive_class, temperature=bundle.temperature,
        threshold=bundle.threshold, band=bundle.indeterminate_band,
        bootstrap_samples=cfg.evaluation.bootstrap_samples, ci_level=cfg.evaluation.ci_level,
        ece_bins=cfg.evaluation.ece_bins, seed=cfg.seed)
    write_evaluation(out_dir, metrics, ev, class_names=list(bundle.class_names),
                     positive_class=bundle.positive_class, temperature=bundle.temperature,
                     title=f"histo-net evaluation of {Path(bundle_path).name}",
                     extra={"manifest": str(manifest), "bundle": str(bundle_path)},
                     ece_bins=cfg.evaluation.ece_bins)
    return metrics
