"""Stage 3: gated attention MIL over feature bags, calibration on validation, test metrics and
the model bundle. Runs on rank 0 only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_net.calibration import (
    calibrated_probs,
    choose_indeterminate_band,
    choose_threshold,
    fit_temperature,
)
from histo_net.errors import ConfigError, HistoNetError
from histo_net.features.embed import SlideEmbedding
from histo_net.features.qc import QCReference, build_qc_reference
from histo_net.features.store import FeaturesKey, read_features_attrs, read_features_h5
from histo_net.models.bundle import ModelBundle, library_versions, load_bundle, save_bundle
from histo_net.models.card import write_model_card
from histo_net.train.context import RunContext, fingerprint, stage1_fingerprint
from histo_net.train.evaluation import EvalSet, compute_metrics, write_evaluation
from histo_net.train.mil import predict_bags, train_mil
from histo_net.train.stages import features_path
from histo_net.wsi.inputs import SlideSpec

logger = logging.getLogger(__name__)

BUNDLE_NAME = "model.pt"
MIL_LAST = "mil_last.pt"


def load_embeddings(ctx: RunContext, enc_hash: str) -> dict[str, SlideEmbedding]:
    """Every slide's features h5 (must match ``enc_hash``); ConfigError naming a missing one."""
    out: dict[str, SlideEmbedding] = {}
    for slide in ctx.manifest.slides:
        path = features_path(ctx, slide.slide_id)
        key = FeaturesKey.for_tiles(enc_hash, ctx.tiles[slide.slide_id].tiles)
        if not (path.is_file() and key.matches(read_features_attrs(path))):
            raise ConfigError(f"{path}: missing or from another encoder; run --stage features first")
        out[slide.slide_id], _, _ = read_features_h5(path)
    return out


def eval_set(ctx: RunContext, slides: list[SlideSpec], embs: dict[str, SlideEmbedding],
             mil: torch.nn.Module) -> EvalSet:
    """Whole-bag MIL predictions + tile outputs of ``slides`` (those with at least one tile)."""
    slides = [s for s in slides if len(embs[s.slide_id].features)]
    bags = [torch.from_numpy(embs[s.slide_id].features) for s in slides]
    logits, attention = predict_bags(mil, bags, device=ctx.device)
    names = ctx.class_names
    return EvalSet(
        slide_ids=[s.slide_id for s in slides],
        labels=np.asarray([names.index(str(s.label)) for s in slides], dtype=np.int64),
        logits=logits, attention=attention,
        tile_probs=[embs[s.slide_id].tile_probs for s in slides],
        tile_labels=[ctx.tiles[s.slide_id].labels if ctx.tiles[s.slide_id].in_tumour is not None else None
                     for s in slides],
        in_tumour=[ctx.tiles[s.slide_id].in_tumour for s in slides])


def calibrate(ctx: RunContext, val: EvalSet) -> tuple[float, float, tuple[float, float]]:
    """(temperature, threshold, indeterminate band) fitted on validation predictions."""
    cal_cfg = ctx.cfg.calibration
    temperature = (fit_temperature(val.logits, val.labels)
                   if cal_cfg.temperature and len(set(val.labels.tolist())) >= 2 else 1.0)
    if len(ctx.class_names) != 2:
        return temperature, 0.5, (0.0, 0.5)
    pos = ctx.class_names.index(ctx.positive_class)
    probs = calibrated_probs(val.logits, temperature) if len(val.labels) else np.zeros((0, 2))
    labels01 = (val.labels == pos).astype(int)
    p = probs[:, pos] if len(probs) else np.zeros(0)
    threshold = cal_cfg.threshold if cal_cfg.threshold is not None else choose_threshold(p, labels01)
    band = choose_indeterminate_band(p, labels01, threshold, target_precision=cal_cfg.target_precision,
                                     min_per_class=cal_cfg.min_per_class)
    return float(temperature), float(threshold), (float(band[0]), float(band[1]))


def mil_fingerprint(ctx: RunContext, enc_hash: str) -> str:
    """Settings that determine the bundle: stage-1 settings, encoder, MIL, calibration, evaluation."""
    cfg = ctx.cfg
    return fingerprint(stage1_fingerprint(ctx), enc_hash, cfg.mil.model_dump(mode="json"),
                       cfg.calibration.model_dump(mode="json"), cfg.evaluation.model_dump(mode="json"),
                       ctx.positive_class)


def bundle_matches(ctx: RunContext, enc_hash: str) -> bool:
    """True when RUN/model.pt and metrics.json exist for the current settings."""
    path = ctx.path(BUNDLE_NAME)
    if not path.is_file() or not ctx.path("metrics.json").is_file():
        return False
    try:
        return load_bundle(path).training_config.get("fingerprint") == mil_fingerprint(ctx, enc_hash)
    except HistoNetError:
        return False


def _train_qc(ctx: RunContext, embs: dict[str, SlideEmbedding]) -> QCReference:
    train = [s for s in ctx.slides_in("train") if len(embs[s.slide_id].qc)]
    qc = np.concatenate([embs[s.slide_id].qc for s in train])
    index = np.concatenate([np.full(len(embs[s.slide_id].qc), i) for i, s in enumerate(train)])
    return build_qc_reference(qc, index)


def _bags(ctx: RunContext, embs: dict[str, SlideEmbedding], split: str
          ) -> tuple[list[torch.Tensor], list[int]]:
    chosen = [s for s in ctx.slides_in(split) if len(embs[s.slide_id].features)]
    return ([torch.from_numpy(embs[s.slide_id].features) for s in chosen],
            [ctx.class_names.index(str(s.label)) for s in chosen])


def stage_mil(ctx: RunContext, enc_hash: str, cnn_ckpt: dict[str, Any], *, resume: bool = False) -> Path:
    """Train MIL, calibrate on validation, evaluate on test, write the bundle; returns its path."""
    bundle_path = ctx.path(BUNDLE_NAME)
    if bundle_matches(ctx, enc_hash):
        logger.info("stage 3 (MIL): bundle matches the settings; skipped")
        return bundle_path
    t0 = time.perf_counter()
    embs = load_embeddings(ctx, enc_hash)
    names, mcfg = ctx.class_names, ctx.cfg.mil
    train_bags, train_labels = _bags(ctx, embs, "train")
    val_bags, val_labels = _bags(ctx, embs, "val")
    if not val_bags:
        logger.warning("no validation slides; MIL early stopping and calibration use training slides")
        val_bags, val_labels = train_bags, train_labels
    mil_kwargs = {"hidden_dim": mcfg.hidden_dim, "attn_dim": mcfg.attn_dim, "dropout": mcfg.dropout}
    last = ctx.path("checkpoints", MIL_LAST)
    fp = mil_fingerprint(ctx, enc_hash)
    marker = last.with_name(last.name + ".fingerprint")
    resume = resume and marker.is_file() and marker.read_text().strip() == fp
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp + "\n")
    mil, history = train_mil(
        train_bags, train_labels, val_bags, val_labels, num_classes=len(names), mil_kwargs=mil_kwargs,
        epochs=mcfg.epochs, lr=mcfg.lr, weight_decay=mcfg.weight_decay, max_bag_size=mcfg.max_bag_tiles,
        class_weighted=mcfg.class_weights, patience=mcfg.patience, seed=ctx.cfg.seed, device=ctx.device,
        checkpoint_path=last, resume=resume, log_csv=ctx.path("logs", "mil.csv"))
    val_slides = ctx.slides_in("val") or ctx.slides_in("train")
    temperature, threshold, band = calibrate(ctx, eval_set(ctx, val_slides, embs, mil))
    test = eval_set(ctx, ctx.slides_in("test"), embs, mil)
    ev_cfg = ctx.cfg.evaluation
    result = compute_metrics(
        test, class_names=names, tile_class_names=ctx.tile_class_names,
        positive_class=ctx.positive_class, temperature=temperature, threshold=threshold, band=band,
        bootstrap_samples=ev_cfg.bootstrap_samples, ci_level=ev_cfg.ci_level, ece_bins=ev_cfg.ece_bins,
        seed=ctx.cfg.seed)
    stage1_hist = cnn_ckpt.get("history") or []
    run_info = {
        "split_sizes": {sp: len(ctx.slides_in(sp)) for sp in ("train", "val", "test")},
        "tile_cnn_best_epoch": int(cnn_ckpt.get("best_epoch", -1)),
        "tile_cnn_final_train_loss": stage1_hist[-1]["train_loss"] if stage1_hist else None,
        "tile_cnn_seconds": cnn_ckpt.get("seconds"),
        "mil_epochs": len(history), "mil_final_train_loss": history[-1]["train_loss"] if history else None,
        "mil_seconds": time.perf_counter() - t0,
    }
    write_evaluation(ctx.out_dir, result, test, class_names=names, positive_class=ctx.positive_class,
                     temperature=temperature, title="histo-net test-split evaluation", extra=run_info,
                     ece_bins=ev_cfg.ece_bins)
    training_config = ctx.cfg.model_dump(mode="json")
    training_config["fingerprint"] = fp
    training_config["data_summary"] = {
        "manifest": str(ctx.manifest.source), "slides": len(ctx.manifest.slides),
        **{f"{sp}_slides": len(ctx.slides_in(sp)) for sp in ("train", "val", "test")},
        "annotations": ctx.manifest.has_annotations,
    }
    kwargs = cnn_ckpt["kwargs"]
    bundle = ModelBundle(
        class_names=names, tile_class_names=list(cnn_ckpt["tile_class_names"]),
        positive_class=ctx.positive_class, target_mpp=float(ctx.cfg.tiling.target_mpp),
        tile_size_px=int(ctx.cfg.tiling.tile_size_px), encoder_name=kwargs["backbone"],
        encoder_kwargs=dict(kwargs), encoder_state=cnn_ckpt["state"],
        mil_kwargs=dict(mil.init_kwargs),
        mil_state={k: v.detach().cpu() for k, v in mil.state_dict().items()},
        temperature=temperature, threshold=threshold, indeterminate_band=band,
        training_config=training_config, metrics=result.to_json(per_slide=False),
        qc_reference=_train_qc(ctx, embs), versions=library_versions())
    save_bundle(bundle_path, bundle)
    write_model_card(ctx.path("model_card.md"), bundle)
    logger.info("stage 3 done: test slide AUROC %s", result.slide_auroc)
    return bundle_path
