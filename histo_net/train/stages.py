"""Training stages 0-2: tile coordinates + labels, the tile CNN, tile embeddings.

Each stage is skipped when its outputs exist with matching settings. Under
torchrun, tiling and embedding are sharded over ranks, the CNN trains with DDP,
and only rank 0 writes shared files; callers put barriers between stages.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_net.distributed import barrier, shard_list
from histo_net.errors import ConfigError, HistoNetError
from histo_net.models.bundle import encoder_hash
from histo_net.models.checkpoint import load_checkpoint, save_checkpoint
from histo_net.train.annotations import (
    NON_TUMOUR,
    read_geojson_polygons,
    tile_labels,
    tumour_membership,
)
from histo_net.train.context import (
    RunContext,
    SlideTiles,
    plan_from_attrs,
    stage1_fingerprint,
)
from histo_net.train.manifest import TrainSlide

logger = logging.getLogger(__name__)

CNN_FINAL = "tile_cnn.pt"
CNN_LAST = "tile_cnn_last.pt"


def _bar(ctx: RunContext, slides: list[TrainSlide], desc: str) -> Any:
    """``slides`` wrapped in a tqdm bar on the main process when progress is on."""
    if not (ctx.progress and ctx.is_main):
        return slides
    from tqdm.auto import tqdm

    return tqdm(slides, desc=desc, unit="slide", leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------- tiles
def _tile_one(ctx: RunContext, slide: TrainSlide) -> None:
    from histo_net.wsi.slide import open_slide
    from histo_net.wsi.tiling import (
        read_tiles_h5,
        tile_slide,
        tiling_settings_match,
        write_tiles_h5,
    )

    path = ctx.path("tiles", f"{slide.slide_id}.h5")
    with open_slide(slide.path, mpp_override=slide.mpp) as handle:
        if path.is_file():
            try:
                _, attrs = read_tiles_h5(path)
                if tiling_settings_match(attrs, ctx.cfg.tiling, handle.mpp):
                    return
            except HistoNetError:
                logger.warning("%s: unreadable tiles file; re-tiling", path)
        result = tile_slide(handle, ctx.cfg.tiling)
    write_tiles_h5(path, result)
    logger.info("%s: %d tiles", slide.slide_id, len(result.coords))


def _labels_for(ctx: RunContext, slide: TrainSlide, coords: np.ndarray, patch_l0: int
                ) -> tuple[np.ndarray, np.ndarray | None]:
    names = ctx.tile_class_names
    if slide.annotations is None:
        return np.full(len(coords), names.index(slide.label), np.int64), None
    polygons = read_geojson_polygons(slide.annotations)
    inside, _ = tumour_membership(coords, patch_l0, polygons)
    if NON_TUMOUR not in names:  # a model without tile annotations: tiles carry the slide label
        return np.full(len(coords), names.index(slide.label), np.int64), inside
    return tile_labels(coords, patch_l0, polygons, slide.label, names), inside


def stage_tiles(ctx: RunContext) -> None:
    """Tile every slide (sharded over ranks, skipping matching files) and load coords + labels."""
    from histo_net.wsi.tiling import read_tiles_h5

    mine = shard_list(list(ctx.manifest.slides), ctx.rank, ctx.world_size)
    for slide in _bar(ctx, mine, "tiling"):
        _tile_one(ctx, slide)
    barrier()
    for slide in ctx.manifest.slides:
        coords, attrs = read_tiles_h5(ctx.path("tiles", f"{slide.slide_id}.h5"))
        plan = plan_from_attrs(attrs)
        labels, inside = _labels_for(ctx, slide, coords, plan.patch_size_level0)
        ctx.tiles[slide.slide_id] = SlideTiles(slide, coords, plan, labels, inside)


# ----------------------------------------------------------------- tile CNN
def _sources(ctx: RunContext, slides: list[TrainSlide]) -> list[Any]:
    from histo_net.train.data import TileSource

    return [TileSource(t.slide.path, t.coords, t.plan, t.labels, t.slide.mpp)
            for t in (ctx.tiles[s.slide_id] for s in slides) if len(t.coords)]


def _loaders(ctx: RunContext) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    from histo_net.train.data import (
        AlbumentationsTransform,
        BalancedSampler,
        MultiSlideTileDataset,
        epoch_samples,
        seed_worker,
    )
    from histo_net.train.transforms import eval_transform, train_transform

    cfg, cnn = ctx.cfg, ctx.cfg.tile_cnn
    size = cfg.tiling.tile_size_px
    train_slides, val_slides = ctx.slides_in("train"), ctx.slides_in("val")
    if not val_slides:
        logger.warning("no validation slides; validating the tile CNN on training slides")
        val_slides = train_slides
    train_tf = AlbumentationsTransform(train_transform(size, stain_jitter=cnn.stain_jitter))
    train_tf.reseed(cfg.seed + ctx.rank)
    train_ds = MultiSlideTileDataset(_sources(ctx, train_slides), train_tf,
                                     cnn.max_tiles_per_slide, seed=cfg.seed)
    val_ds = MultiSlideTileDataset(_sources(ctx, val_slides), AlbumentationsTransform(eval_transform(size)),
                                   cnn.val_max_tiles_per_slide, seed=cfg.seed + 1)
    if len(train_ds) == 0:
        raise ConfigError("no training tiles: every training slide has zero tissue tiles")
    per_rank = epoch_samples(cnn.tiles_per_epoch or len(train_ds), None, cnn.batch_size * ctx.world_size)
    sampler = BalancedSampler(train_ds.labels, per_rank // ctx.world_size, rank=ctx.rank,
                              world_size=ctx.world_size, seed=cfg.seed)
    common: dict[str, Any] = {"num_workers": ctx.workers, "pin_memory": ctx.device.type == "cuda",
                              "worker_init_fn": seed_worker, "persistent_workers": ctx.workers > 0}
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * ctx.rank)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=cnn.batch_size, sampler=sampler,
                                               drop_last=True, generator=gen, **common)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=cnn.batch_size, shuffle=False, **common)
    logger.info("tile CNN: %d training tiles (%d draws/epoch/rank), %d validation tiles",
                len(train_ds), len(sampler), len(val_ds))
    return train_loader, val_loader


def encoder_ctor_kwargs(ctx: RunContext) -> dict[str, Any]:
    """``TileClassifier`` keyword arguments (without weights) for this run."""
    cnn = ctx.cfg.tile_cnn
    return {"backbone": cnn.backbone, "num_classes": len(ctx.tile_class_names), "dropout": cnn.dropout}


def stage1_outputs_match(ctx: RunContext) -> bool:
    """True when ``checkpoints/tile_cnn.pt`` exists for the current settings."""
    path = ctx.path("checkpoints", CNN_FINAL)
    if not path.is_file():
        return False
    try:
        return load_checkpoint(path).get("fingerprint") == stage1_fingerprint(ctx)
    except HistoNetError:
        return False


def stage_tile_cnn(ctx: RunContext, *, resume: bool) -> None:
    """Train the tile classifier (DDP under torchrun) into ``checkpoints/tile_cnn.pt``."""
    from histo_net.models import TileClassifier
    from histo_net.train.engine import fit, prepare_model

    if stage1_outputs_match(ctx):
        logger.info("stage 1 (tile CNN): outputs match the settings; skipped")
        return
    fp = stage1_fingerprint(ctx)
    last = ctx.path("checkpoints", CNN_LAST)
    marker = ctx.path("checkpoints", CNN_LAST + ".fingerprint")
    if resume and last.is_file() and (not marker.is_file() or marker.read_text().strip() != fp):
        logger.warning("%s was written with other settings; starting stage 1 afresh", last)
        resume = False
    if ctx.is_main:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp + "\n")
    torch.manual_seed(ctx.cfg.seed)
    cnn = ctx.cfg.tile_cnn
    model = TileClassifier(**encoder_ctor_kwargs(ctx), weights_path=cnn.weights_path)
    model = prepare_model(model, ctx.device)
    train_loader, val_loader = _loaders(ctx)
    wrapped: torch.nn.Module = model
    if ctx.world_size > 1:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    t0 = time.perf_counter()
    result = fit(wrapped, train_loader, val_loader, epochs=cnn.epochs, lr=cnn.lr,
                 weight_decay=cnn.weight_decay, device=ctx.device, amp=cnn.amp,
                 patience=cnn.patience, checkpoint_path=last, resume=resume,
                 log_csv=ctx.path("logs", "tile_cnn.csv"),
                 tensorboard_dir=ctx.path("logs", "tensorboard", "tile_cnn"),
                 is_main_process=ctx.is_main, progress=ctx.progress and ctx.is_main)
    for rec in result.history:
        if not math.isfinite(rec.get("train_loss", float("nan"))):
            raise HistoNetError(f"stage 1: non-finite training loss at epoch {int(rec['epoch'])}")
    if ctx.is_main:
        save_checkpoint(ctx.path("checkpoints", CNN_FINAL), {
            "state": result.best_state_dict, "fingerprint": fp, "kwargs": encoder_ctor_kwargs(ctx),
            "tile_class_names": ctx.tile_class_names, "best_epoch": result.best_epoch,
            "history": result.history, "seconds": time.perf_counter() - t0,
        })
    logger.info("stage 1 done: best epoch %d of %d", result.best_epoch, len(result.history))
    barrier()


def load_trained_encoder(ctx: RunContext) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """(encoder on ctx.device, checkpoint dict, encoder hash); ConfigError when stage 1 has not run."""
    from histo_net.models import TileClassifier

    path = ctx.path("checkpoints", CNN_FINAL)
    if not stage1_outputs_match(ctx):
        raise ConfigError(f"{path}: missing or trained with other settings; run --stage tiles first")
    ckpt = load_checkpoint(path)
    model = TileClassifier(**ckpt["kwargs"])
    model.load_state_dict(ckpt["state"])
    model = model.to(ctx.device).eval()
    return model, ckpt, encoder_hash(ckpt["kwargs"]["backbone"], ckpt["kwargs"], ckpt["state"])


# ----------------------------------------------------------------- features
def features_path(ctx: RunContext, slide_id: str) -> Path:
    """``RUN/features/<slide_id>.h5``."""
    return ctx.path("features", f"{slide_id}.h5")


def features_match(path: Path, enc_hash: str, n_tiles: int) -> bool:
    """True when a features file exists for this encoder and tile count."""
    from histo_net.features.embed import read_features_attrs

    attrs = read_features_attrs(path) if path.is_file() else {}
    return attrs.get("encoder_hash") == enc_hash and int(attrs.get("n_tiles", -1)) == n_tiles


def stage_features(ctx: RunContext) -> str:
    """Embed every slide's tiles (sharded over ranks) into ``features/<id>.h5``; returns the encoder hash."""
    from histo_net.features.embed import embed_slide, write_features_h5

    encoder, ckpt, enc_hash = load_trained_encoder(ctx)
    mine = shard_list(list(ctx.manifest.slides), ctx.rank, ctx.world_size)
    done = 0
    for slide in _bar(ctx, mine, "embedding"):
        tiles = ctx.tiles[slide.slide_id]
        path = features_path(ctx, slide.slide_id)
        if features_match(path, enc_hash, len(tiles.coords)):
            continue
        emb = embed_slide(encoder, slide.path, tiles.coords, tiles.plan, device=ctx.device,
                          batch_size=ctx.cfg.features.batch_size, workers=ctx.workers,
                          mpp_override=slide.mpp, amp=ctx.cfg.tile_cnn.amp, progress=False)
        write_features_h5(path, emb, tiles.coords, {
            "encoder_name": ckpt["kwargs"]["backbone"], "encoder_hash": enc_hash,
            "n_tiles": len(tiles.coords), "slide_id": slide.slide_id, "written_by_rank": ctx.rank,
            "tile_class_names": list(ckpt["tile_class_names"]),
            "target_mpp": float(tiles.plan.target_mpp), "tile_size_px": int(tiles.plan.tile_size_px),
        })
        done += 1
    logger.info("stage 2: rank %d embedded %d of its %d slides", ctx.rank, done, len(mine))
    barrier()
    return enc_hash
