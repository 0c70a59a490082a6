"""Stage 3: gated attention MIL over feature bags, calibration on held-out predictions, the
slide checks, guardrails, test metrics and the model bundle. Runs on rank 0 only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_net.calibration import CalibrationFit, fit_calibration
from histo_net.errors import HistoNetError
from histo_net.features.embed import SlideEmbedding
from histo_net.features.ood import DomainReference, fit_domain_reference, tumour_probability
from histo_net.features.qc import QCReference, build_qc_reference
from histo_net.features.tumour_burden import tumour_free_tiles
from histo_net.io_utils import sha256_file
from histo_net.models.bundle import ModelBundle, library_versions, load_bundle, save_bundle
from histo_net.models.card import write_model_card
from histo_net.models.hierarchy import SubtypeHead
from histo_net.train.context import RunContext, fingerprint, stage1_fingerprint
from histo_net.train.crossfit import cross_fit_logits
from histo_net.train.eval_sets import (
    eval_set,
    load_embeddings,
    mil_targets,
    slide_area,
    target_head,
)
from histo_net.train.evaluation import EvalResult, EvalSet, compute_metrics, write_evaluation
from histo_net.train.mil import train_mil
from histo_net.train.stages import load_trained_encoder
from histo_net.train.tile_head import (
    FrozenEncoder,
    TileHead,
    frozen_encoder,
    train_tile_head,
    with_tile_probs,
)

logger = logging.getLogger(__name__)

BUNDLE_NAME = "model.pt"
MIL_LAST = "mil_last.pt"


def mil_ctor_kwargs(ctx: RunContext) -> dict[str, Any]:
    """``GatedAttentionMIL`` keyword arguments from the config (in_dim/num_classes added later)."""
    mcfg = ctx.cfg.mil
    kwargs: dict[str, Any] = {"hidden_dim": mcfg.hidden_dim, "attn_dim": mcfg.attn_dim,
                              "dropout": mcfg.dropout}
    if mcfg.class_specific:  # only when set, so default fingerprints and bundles are unchanged
        kwargs["class_specific"] = True
    return kwargs


def calibration_method(ctx: RunContext) -> str:
    """``validation`` or ``cross_fit`` (config ``calibration.method``; auto by validation size)."""
    cal = ctx.cfg.calibration
    if cal.method != "auto":
        return cal.method
    val = ctx.slides_in("val")
    counts = [sum(1 for s in val if str(s.label) == name) for name in ctx.class_names]
    return "validation" if min(counts) >= cal.min_per_class else "cross_fit"


def calibrate(ctx: RunContext, embs: dict[str, SlideEmbedding], mil: torch.nn.Module,
              epochs: int, head: SubtypeHead | None = None) -> CalibrationFit:
    """Temperature, threshold and band on held-out predictions (see :func:`calibration_method`).

    ``cross_fit`` retrains the MIL head on k patient-grouped folds of train + validation for
    ``epochs`` epochs and fits on the out-of-fold logits; ``validation`` uses ``mil`` on the
    validation split; with no validation slides at all, the training slides (warned). With
    a subtype ``head`` the MIL learns subtypes and is calibrated on the folded top-level logits.
    """
    cal = ctx.cfg.calibration
    method = calibration_method(ctx)
    names = ctx.class_names
    if method == "cross_fit":
        pool = [s for s in ctx.slides_in("train") + ctx.slides_in("val") if len(embs[s.slide_id].features)]
        mcfg = ctx.cfg.mil
        logits = cross_fit_logits(
            [torch.from_numpy(embs[s.slide_id].features) for s in pool],
            mil_targets(ctx, pool, head), [s.patient_id or s.slide_id for s in pool],
            num_classes=len(head.names) if head else len(names), folds=cal.folds, epochs=epochs,
            seed=ctx.cfg.seed, device=ctx.device,
            mil_kwargs=mil_ctor_kwargs(ctx),
            lr=mcfg.lr, weight_decay=mcfg.weight_decay, max_bag_size=mcfg.max_bag_tiles,
            class_weighted=mcfg.class_weights)
        logits = head.top_logits(logits) if head is not None else logits
        labels = np.asarray([names.index(str(s.label)) for s in pool], dtype=np.int64)
    else:
        slides = ctx.slides_in("val")
        if not slides:
            logger.warning("no validation slides: calibrating on the training slides")
            method, slides = "training", ctx.slides_in("train")
        ev = eval_set(ctx, slides, embs, mil, head=head)
        logits, labels = ev.logits, ev.labels
    return fit_calibration(logits, labels, class_names=names, positive_index=names.index(ctx.positive_class),
                           method=method, target_error=1.0 - cal.target_precision,
                           fixed_threshold=cal.threshold, fit_temperature_=cal.temperature,
                           min_per_class=cal.min_per_class,
                           # fold models (fewer slides, fewer epochs) are softer than the final
                           # model: a temperature that sharpens them would overstate its confidence
                           min_temperature=1.0 if method == "cross_fit" else 0.0)


def fit_domain(ctx: RunContext, embs: dict[str, SlideEmbedding], qc_ref: QCReference) -> DomainReference | None:
    """The slide checks' limits, fitted on training + validation slides (training tiles in the bank).

    The no-tumour rule rests on what tumour-free tissue scores: P(tumour) of the annotated
    non-tumour tiles of each annotated reference slide, leaving out tiles next to tumour (their
    footprint may still hold some; see :func:`tumour_free_tiles`).
    """
    dcfg = ctx.cfg.domain
    if not dcfg.enabled:
        return None
    slides = [s for s in ctx.slides_in("train") + ctx.slides_in("val") if len(embs[s.slide_id].features)]
    names = ctx.tile_class_names
    null = []
    for s in slides:
        tiles = ctx.tiles[s.slide_id]
        p = tumour_probability(embs[s.slide_id].tile_probs, names)
        if p is None or tiles.in_tumour is None:
            continue
        free = tumour_free_tiles(tiles.tiles.coords, tiles.in_tumour, tiles.tiles.plan.patch_size_level0)
        if free.any():
            null.append(p[free])
    return fit_domain_reference(
        [(embs[s.slide_id].features, embs[s.slide_id].tile_probs, embs[s.slide_id].qc) for s in slides],
        tile_class_names=names, tile_area=slide_area(ctx), in_bank=[ctx.split_by_slide[s.slide_id] == "train" for s in slides],
        null_tumour_probs=null or None, alpha=dcfg.alpha,
        alpha_tumour=dcfg.alpha_tumour, bank_size=dcfg.bank_size, knn_k=dcfg.knn_k,
        blur_threshold=qc_ref.blur_threshold, seed=ctx.cfg.seed)


def guardrail_warnings(ctx: RunContext, val: EvalResult | None, cal: CalibrationFit,
                       domain: DomainReference | None = None) -> list[str]:
    """Loud warnings about this model (logged at WARNING; written into the bundle and card)."""
    g = ctx.cfg.guardrails
    out: list[str] = []
    val_slides = ctx.slides_in("val")
    missing = [n for n in ctx.class_names if not any(str(s.label) == n for s in val_slides)]
    if not val_slides:
        out.append("no validation slides: model selection and the validation figures are missing")
    elif missing:
        out.append(f"class(es) missing from validation: {', '.join(missing)}")
    if val is not None and val.n_slides:
        auc, bacc = val.slide_auroc, val.balanced_accuracy
        if not np.isfinite(auc) or auc < g.min_val_auroc:
            out.append(f"validation slide AUROC {auc:.3f} is below the floor {g.min_val_auroc:.2f}")
        if not np.isfinite(bacc) or bacc < g.min_val_balanced_accuracy:
            out.append(f"validation balanced accuracy {bacc:.3f} is below the floor "
                       f"{g.min_val_balanced_accuracy:.2f}")
    out.extend(cal.warnings)
    disabled = domain.diagnostics.get("tumour_check_disabled_in_sample_flag_rate") if domain else None
    if disabled is not None:
        out.append(f"the no-tumour check is off: its fitted limit flagged {disabled:.0%} of the training "
                   "slides (the tile head does not separate tumour from tumour-free tissue)")
    for text in out:
        logger.warning("MODEL WARNING: %s", text)
    return out


def _sha256_or_empty(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError:
        return ""


def training_slides(ctx: RunContext) -> dict[str, dict[str, list[str]]]:
    """Slide ids and sha256 of the training and validation slides (evaluate refuses them)."""
    return {split: {"slide_ids": [s.slide_id for s in ctx.slides_in(split)],
                    "sha256": [_sha256_or_empty(s.path) for s in ctx.slides_in(split)]}
            for split in ("train", "val")}


def mil_fingerprint(ctx: RunContext, enc_hash: str) -> str:
    """Settings that determine the bundle: stage-1 settings, encoder, MIL, calibration, checks."""
    cfg = ctx.cfg
    return fingerprint(stage1_fingerprint(ctx), enc_hash, cfg.mil.model_dump(mode="json"),
                       cfg.calibration.model_dump(mode="json"), cfg.evaluation.model_dump(mode="json"),
                       cfg.guardrails.model_dump(mode="json"), cfg.domain.model_dump(mode="json"),
                       ctx.positive_class,
                       *([cfg.encoder.model_dump(mode="json")] if cfg.frozen_encoder else []),
                       *(["target=subtype"] if cfg.target == "subtype" else []))


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


def _bags(ctx: RunContext, embs: dict[str, SlideEmbedding], split: str, head: SubtypeHead | None
          ) -> tuple[list[torch.Tensor], list[int]]:
    chosen = [s for s in ctx.slides_in(split) if len(embs[s.slide_id].features)]
    return [torch.from_numpy(embs[s.slide_id].features) for s in chosen], mil_targets(ctx, chosen, head)


def _metrics(ctx: RunContext, ev: EvalSet, cal: CalibrationFit) -> EvalResult:
    ev_cfg = ctx.cfg.evaluation
    return compute_metrics(
        ev, class_names=ctx.class_names, tile_class_names=ctx.tile_class_names,
        positive_class=ctx.positive_class, temperature=cal.temperature, threshold=cal.threshold,
        band=cal.band, bootstrap_samples=ev_cfg.bootstrap_samples, ci_level=ev_cfg.ci_level,
        ece_bins=ev_cfg.ece_bins, seed=ctx.cfg.seed)


def validation_summary(val: EvalResult | None, test: EvalResult, cal: CalibrationFit) -> dict[str, Any]:
    """The figures every report shows near the call."""
    def fig(result: EvalResult | None, key: str) -> float | None:
        value = getattr(result, key) if result is not None else None
        return None if value is None or not np.isfinite(value) else float(value)

    return {"validation_slides": 0 if val is None else val.n_slides,
            "validation_auroc": fig(val, "slide_auroc"),
            "validation_balanced_accuracy": fig(val, "balanced_accuracy"),
            "test_slides": test.n_slides, "test_auroc": fig(test, "slide_auroc"),
            "test_balanced_accuracy": fig(test, "balanced_accuracy"),
            "calibration_slides": cal.n_slides, "calibration_method": cal.method,
            "calibration_per_class": dict(cal.n_per_class)}


def run_stage_mil(ctx: RunContext, *, resume: bool = False) -> Path:
    """Stage 3 for either mode: the trained tile CNN's checkpoint, or the frozen encoder."""
    if ctx.cfg.frozen_encoder:
        frozen = frozen_encoder(ctx.cfg)
        return stage_mil(ctx, frozen.feature_key, {}, resume=resume, frozen=frozen)
    _, cnn_ckpt, enc_hash = load_trained_encoder(ctx)
    return stage_mil(ctx, enc_hash, cnn_ckpt, resume=resume)


def _encoder_fields(cnn_ckpt: dict[str, Any], frozen: FrozenEncoder | None, head: TileHead | None
                    ) -> dict[str, Any]:
    """The bundle's encoder fields: the tile CNN inside, or the pretrained reference + head."""
    if frozen is None or head is None:
        kwargs = cnn_ckpt["kwargs"]
        return {"tile_class_names": list(cnn_ckpt["tile_class_names"]), "encoder_name": kwargs["backbone"],
                "encoder_kwargs": dict(kwargs), "encoder_state": cnn_ckpt["state"]}
    return {"tile_class_names": list(head.tile_class_names), "encoder_name": frozen.preset.name,
            "encoder_kwargs": {"preset": frozen.preset.name, "num_classes": len(head.tile_class_names)},
            "encoder_state": dict(head.state),
            "pretrained_encoder": {**frozen.bundle_record(), "tile_head": {
                "source": head.source, "n_tiles": head.n_tiles, "final_loss": head.final_loss}}}


def stage_mil(ctx: RunContext, enc_hash: str, cnn_ckpt: dict[str, Any], *, resume: bool = False,
              frozen: FrozenEncoder | None = None) -> Path:
    """Train MIL, calibrate, fit the slide checks, evaluate on test, write the bundle.

    ``frozen``: frozen-feature mode; after MIL a linear tile head is trained on the cached
    features (:func:`histo_net.train.tile_head.train_tile_head`) and its probabilities stand
    in for the tile CNN's everywhere below; the bundle references the encoder's weights.
    """
    bundle_path = ctx.path(BUNDLE_NAME)
    if bundle_matches(ctx, enc_hash):
        logger.info("stage 3 (MIL): bundle matches the settings; skipped")
        return bundle_path
    t0 = time.perf_counter()
    embs = load_embeddings(ctx, enc_hash)
    names, mcfg = ctx.class_names, ctx.cfg.mil
    subtypes = target_head(ctx)
    train_bags, train_labels = _bags(ctx, embs, "train", subtypes)
    val_bags, val_labels = _bags(ctx, embs, "val", subtypes)
    if not val_bags:
        logger.warning("no validation slides; MIL early stopping and calibration use training slides")
        val_bags, val_labels = train_bags, train_labels
    mil_kwargs = mil_ctor_kwargs(ctx)
    last = ctx.path("checkpoints", MIL_LAST)
    fp = mil_fingerprint(ctx, enc_hash)
    marker = last.with_name(last.name + ".fingerprint")
    resume = resume and marker.is_file() and marker.read_text().strip() == fp
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp + "\n")
    mil, history = train_mil(
        train_bags, train_labels, val_bags, val_labels, mil_kwargs=mil_kwargs,
        num_classes=len(subtypes.names) if subtypes else len(names), epochs=mcfg.epochs, lr=mcfg.lr, weight_decay=mcfg.weight_decay, max_bag_size=mcfg.max_bag_tiles,
        class_weighted=mcfg.class_weights, patience=mcfg.patience, seed=ctx.cfg.seed, device=ctx.device,
        checkpoint_path=last, resume=resume, log_csv=ctx.path("logs", "mil.csv"))
    head = None
    if frozen is not None:
        head = train_tile_head(ctx, embs, mil, subtypes)
        embs = with_tile_probs(embs, head)
    best_epoch = int(np.argmin([h.get("val_loss", np.inf) for h in history])) if history else 0
    cal = calibrate(ctx, embs, mil, epochs=max(1, best_epoch + 1), head=subtypes)
    qc_ref = _train_qc(ctx, embs)
    domain = fit_domain(ctx, embs, qc_ref)
    val_slides = ctx.slides_in("val")
    val_result = _metrics(ctx, eval_set(ctx, val_slides, embs, mil, domain, subtypes), cal) if val_slides else None
    test = eval_set(ctx, ctx.slides_in("test"), embs, mil, domain, subtypes)
    result = _metrics(ctx, test, cal)
    warnings = guardrail_warnings(ctx, val_result, cal, domain)
    stage1_hist = cnn_ckpt.get("history") or []
    run_info = {
        "split_sizes": {sp: len(ctx.slides_in(sp)) for sp in ("train", "val", "test")},
        "tile_cnn_best_epoch": int(cnn_ckpt.get("best_epoch", -1)),
        "tile_cnn_final_train_loss": stage1_hist[-1]["train_loss"] if stage1_hist else None,
        "tile_cnn_seconds": cnn_ckpt.get("seconds"),
        "mil_epochs": len(history), "mil_final_train_loss": history[-1]["train_loss"] if history else None,
        "calibration_method": cal.method, "calibration_slides": cal.n_slides,
        "mil_seconds": time.perf_counter() - t0, "warnings": warnings,
    }
    write_evaluation(ctx.out_dir, result, test, class_names=names, positive_class=ctx.positive_class,
                     temperature=cal.temperature, title="histo-net test-split evaluation", extra=run_info,
                     ece_bins=ctx.cfg.evaluation.ece_bins)
    training_config = ctx.cfg.model_dump(mode="json")
    training_config["fingerprint"] = fp
    training_config["data_summary"] = {
        "manifest": str(ctx.manifest.source), "slides": len(ctx.manifest.slides),
        **{f"{sp}_slides": len(ctx.slides_in(sp)) for sp in ("train", "val", "test")},
        "annotations": ctx.manifest.has_annotations,
    }
    bundle = ModelBundle(
        class_names=names, positive_class=ctx.positive_class,
        target_mpp=float(ctx.cfg.tiling.target_mpp), tile_size_px=int(ctx.cfg.tiling.tile_size_px),
        **_encoder_fields(cnn_ckpt, frozen, head),
        mil_kwargs=dict(mil.init_kwargs),
        mil_state={k: v.detach().cpu() for k, v in mil.state_dict().items()},
        temperature=cal.temperature, threshold=cal.threshold, indeterminate_band=cal.band,
        training_config=training_config, metrics=result.to_json(per_slide=False),
        qc_reference=qc_ref, versions=library_versions(), calibration=cal.to_dict(),
        domain_reference=domain, training_slides=training_slides(ctx), guardrail_warnings=warnings,
        validation_summary=validation_summary(val_result, result, cal),
        subtype_names=list(subtypes.names) if subtypes else [],
        subtype_groups=list(subtypes.groups) if subtypes else [])
    save_bundle(bundle_path, bundle)
    write_model_card(ctx.path("model_card.md"), bundle)
    logger.info("stage 3 done: test slide AUROC %s", result.slide_auroc)
    return bundle_path
