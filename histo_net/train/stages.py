"""Training stages 0-2: tile coordinates + labels, the tile CNN, tile embeddings.

Each stage is skipped when its outputs exist with matching settings. Under torchrun, tiling
and embedding are sharded over ranks (:func:`histo_net.distributed.select_shard`), the CNN
trains with DDP, and only rank 0 writes shared files; barriers sit between stages.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_net.distributed import barrier, select_shard
from histo_net.errors import ConfigError, HistoNetError
from histo_net.features.store import FeaturesKey, ensure_features, read_features_attrs
from histo_net.models.bundle import encoder_hash
from histo_net.models.checkpoint import load_checkpoint, save_checkpoint
from histo_net.models.tile_cnn import TileClassifier
from histo_net.taxonomy import NON_TUMOUR
from histo_net.train.annotations import read_geojson_polygons, tile_labels, tumour_membership
from histo_net.train.context import RunContext, SlideTiles, stage1_fingerprint
from histo_net.train.data import (
    AlbumentationsTransform,
    BalancedSampler,
    MultiSlideTileDataset,
    TileSource,
    epoch_samples,
    seed_worker,
)
from histo_net.train.engine import FitConfig, fit, prepare_model
from histo_net.train.tile_head import frozen_encoder
from histo_net.train.transforms import eval_transform, train_transform
from histo_net.wsi.inputs import SlideSpec
from histo_net.wsi.tiles_file import ensure_tiles, read_tiles_h5, tiles_path

logger = logging.getLogger(__name__)

CNN_FINAL = "tile_cnn.pt"
CNN_LAST = "tile_cnn_last.pt"


def progress_bar(ctx: RunContext, slides: list[SlideSpec], desc: str) -> Any:
    """``slides`` wrapped in a tqdm bar on the main process when progress is on."""
    if not (ctx.progress and ctx.is_main):
        return slides
    from tqdm.auto import tqdm  # deferred: only when a bar is shown

    return tqdm(slides, desc=desc, unit="slide", leave=False, dynamic_ncols=True)


def my_slides(ctx: RunContext) -> list[SlideSpec]:
    """This rank's share of the manifest's slides."""
    return select_shard(list(ctx.manifest.slides), ctx.rank, ctx.world_size, key=lambda s: s.slide_id)


# --------------------------------------------------------------------- tiles
def _labels_for(ctx: RunContext, slide: SlideSpec, coords: np.ndarray, patch_l0: int
                ) -> tuple[np.ndarray, np.ndarray | None]:
    names = ctx.tile_class_names
    if slide.annotations is None:
        return np.full(len(coords), names.index(str(slide.label)), np.int64), None
    polygons = read_geojson_polygons(slide.annotations)
    inside, _ = tumour_membership(coords, patch_l0, polygons)
    if NON_TUMOUR not in names:  # a model without tile annotations: tiles carry the slide label
        return np.full(len(coords), names.index(str(slide.label)), np.int64), inside
    return tile_labels(coords, patch_l0, polygons, str(slide.label), names), inside


def stage_tiles(ctx: RunContext) -> None:
    """Tile every slide (sharded over ranks, skipping matching files) and load coords + labels."""
    tiles_dir = ctx.path("tiles")
    for slide in progress_bar(ctx, my_slides(ctx), "tiling"):
        outcome = ensure_tiles(slide, ctx.cfg.tiling, tiles_dir, write_qc=False)
        logger.info("%s", outcome.summary_line(slide.slide_id))
    barrier()
    for slide in ctx.manifest.slides:
        tiles = read_tiles_h5(tiles_path(tiles_dir, slide.slide_id))
        labels, inside = _labels_for(ctx, slide, tiles.coords, tiles.plan.patch_size_level0)
        ctx.tiles[slide.slide_id] = SlideTiles(slide, tiles, labels, inside)


# ----------------------------------------------------------------- tile CNN
def _sources(ctx: RunContext, slides: list[SlideSpec]) -> list[TileSource]:
    return [TileSource(t.slide.path, t.tiles.coords, t.tiles.plan, t.labels, t.slide.mpp)
            for t in (ctx.tiles[s.slide_id] for s in slides) if t.tiles.n_tiles]


def _loaders(ctx: RunContext) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    cfg, cnn = ctx.cfg, ctx.cfg.tile_cnn
    size = cfg.tiling.tile_size_px
    train_slides, val_slides = ctx.slides_in("train"), ctx.slides_in("val")
    if not val_slides:
        logger.warning("no validation slides; validating the tile CNN on training slides")
        val_slides = train_slides
    train_tf = AlbumentationsTransform(train_transform(size, stain_jitter=cnn.stain_jitter,
                                                       augmentation=cnn.augmentation))
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
    return {"backbone": cnn.backbone, "num_classes": len(ctx.tile_class_names), "dropout": cnn.dropout,
            "stain_normalization": cnn.stain_normalization}


def stage1_outputs_match(ctx: RunContext) -> bool:
    """True when ``checkpoints/tile_cnn.pt`` exists for the current settings."""
    path = ctx.path("checkpoints", CNN_FINAL)
    if not path.is_file():
        return False
    try:
        return load_checkpoint(path).get("fingerprint") == stage1_fingerprint(ctx)
    except HistoNetError:
        return False


def _resume_allowed(ctx: RunContext, last: Path, resume: bool, fp: str) -> bool:
    """Resume only from a per-epoch checkpoint written with the same settings (marker file)."""
    marker = last.with_name(last.name + ".fingerprint")
    allowed = resume and last.is_file() and marker.is_file() and marker.read_text().strip() == fp
    if resume and last.is_file() and not allowed:
        logger.warning("%s was written with other settings; starting afresh", last)
    if ctx.is_main:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp + "\n")
    return allowed


def stage_tile_cnn(ctx: RunContext, *, resume: bool) -> None:
    """Train the tile classifier (DDP under torchrun) into ``checkpoints/tile_cnn.pt``.

    Skipped in frozen-feature mode (``encoder.preset`` set): the pretrained encoder is not trained.
    """
    if ctx.cfg.frozen_encoder:
        logger.info("stage 1 (tile CNN): skipped, frozen pretrained encoder %s", ctx.cfg.encoder.preset)
        return
    if stage1_outputs_match(ctx):
        logger.info("stage 1 (tile CNN): outputs match the settings; skipped")
        return
    fp = stage1_fingerprint(ctx)
    last = ctx.path("checkpoints", CNN_LAST)
    resume = _resume_allowed(ctx, last, resume, fp)
    torch.manual_seed(ctx.cfg.seed)
    cnn = ctx.cfg.tile_cnn
    model = prepare_model(TileClassifier(**encoder_ctor_kwargs(ctx), weights_path=cnn.weights_path),
                          ctx.device)
    train_loader, val_loader = _loaders(ctx)
    wrapped: torch.nn.Module = model
    if ctx.world_size > 1:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    t0 = time.perf_counter()
    fit_cfg = FitConfig(epochs=cnn.epochs, lr=cnn.lr, weight_decay=cnn.weight_decay, amp=cnn.amp,
                        patience=cnn.patience)
    result = fit(wrapped, train_loader, val_loader, fit_cfg, device=ctx.device,
                 checkpoint_path=last, resume=resume, log_csv=ctx.path("logs", "tile_cnn.csv"),
                 tensorboard_dir=ctx.path("logs", "tensorboard", "tile_cnn"),
                 is_main_process=ctx.is_main, progress=ctx.progress and ctx.is_main)
    if ctx.is_main:
        save_checkpoint(ctx.path("checkpoints", CNN_FINAL), {
            "state": result.best_state_dict, "fingerprint": fp, "kwargs": encoder_ctor_kwargs(ctx),
            "tile_class_names": ctx.tile_class_names, "best_epoch": result.best_epoch,
            "history": result.history, "seconds": time.perf_counter() - t0,
        })
    logger.info("stage 1 done: best epoch %d of %d", result.best_epoch, len(result.history))
    barrier()


def load_trained_encoder(ctx: RunContext) -> tuple[TileClassifier, dict[str, Any], str]:
    """(encoder on ctx.device, checkpoint dict, encoder hash); ConfigError when stage 1 has not run."""
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


def embed_all(ctx: RunContext, encoder: torch.nn.Module, enc_hash: str, attrs: dict[str, Any],
              *, amp: bool = True) -> None:
    """Embed this rank's slides into ``features/<id>.h5`` unless cached with the same key."""
    done = 0
    mine = my_slides(ctx)
    for slide in progress_bar(ctx, mine, "embedding"):
        tiles = ctx.tiles[slide.slide_id].tiles
        done += ensure_features(features_path(ctx, slide.slide_id), FeaturesKey.for_tiles(enc_hash, tiles),
                                encoder, slide, tiles, device=ctx.device,
                                batch_size=ctx.cfg.features.batch_size, workers=ctx.workers, amp=amp,
                                attrs={**attrs, "written_by_rank": ctx.rank})
    logger.info("embedding: rank %d embedded %d of its %d slides", ctx.rank, done, len(mine))
    barrier()


def stage_features(ctx: RunContext) -> str:
    """Embed every slide with the trained tile CNN (or, in frozen-feature mode, the pretrained
    encoder); returns the encoder hash keying the features cache."""
    if ctx.cfg.frozen_encoder:
        return stage_frozen_features(ctx)
    encoder, ckpt, enc_hash = load_trained_encoder(ctx)
    embed_all(ctx, encoder, enc_hash, {"encoder_name": ckpt["kwargs"]["backbone"],
                                       "tile_class_names": list(ckpt["tile_class_names"])},
              amp=ctx.cfg.tile_cnn.amp)
    return enc_hash


def stage_frozen_features(ctx: RunContext) -> str:
    """Embed every slide once with the frozen pretrained encoder (no head: ``tile_probs`` (N,0));
    returns the cache key (preset fingerprint + weights sha256). The trunk is only built when
    some slide's cache is missing."""
    frozen = frozen_encoder(ctx.cfg)
    key = frozen.feature_key
    cached = all(FeaturesKey.for_tiles(key, ctx.tiles[s.slide_id].tiles).matches(
        read_features_attrs(features_path(ctx, s.slide_id))) for s in my_slides(ctx))
    if cached:
        logger.info("stage 2 (features): cached for %s; skipped", frozen.preset.name)
        barrier()
        return key
    encoder = frozen.build(ctx.device)
    if encoder.feature_key() != key:  # pragma: no cover - the same two hashes
        raise ConfigError(f"{frozen.weights_path}: feature key changed while loading")
    embed_all(ctx, encoder, key, {"encoder_name": frozen.preset.name, "tile_class_names": [],
                                  "encoder_weights_sha256": frozen.weights_sha256},
              amp=frozen.preset.precision != "float32")
    return key
