"""Entry points: ``run_training`` (manifest -> RUN with model.pt) and ``evaluate_bundle``.

Under torchrun, every rank calls ``run_training``; the process group is set up from the
environment, stage 1 uses DDP, stages 0 and 2 are sharded, and rank 0 alone writes shared
files and runs stage 3.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from histo_net import __version__
from histo_net import distributed as dist
from histo_net.config import build_config, to_yaml
from histo_net.device import auto_workers, seed_everything, select_device
from histo_net.device import resolve_workers as device_workers
from histo_net.errors import ConfigError
from histo_net.features.tiles import default_workers
from histo_net.io_utils import atomic_write_text, sha256_file
from histo_net.models.bundle import ModelBundle, load_bundle
from histo_net.train.config import TrainConfig
from histo_net.train.context import RunContext
from histo_net.train.eval_sets import eval_set, load_embeddings, target_head
from histo_net.train.evaluation import EvalResult, compute_metrics, write_evaluation
from histo_net.train.manifest import validate_manifest
from histo_net.train.slide_model import run_stage_mil
from histo_net.train.splits import patient_splits, slide_splits, write_splits_csv
from histo_net.train.stages import embed_all, stage_features, stage_tile_cnn, stage_tiles
from histo_net.train.tile_head import frozen_encoder
from histo_net.wsi.inputs import SlideSpec

logger = logging.getLogger(__name__)

STAGES = ("tiles", "features", "mil", "all")


def resolve_workers(workers: int | str | None, world_size: int,
                    device: torch.device | None = None) -> int:
    """DataLoader workers per rank: the given number, ``"auto"`` (histo_net.device.auto_workers
    shared among ranks), else the cores shared among ranks."""
    if isinstance(workers, str) and workers.strip().lower() == "auto":
        return max(1, auto_workers(device or torch.device("cpu")) // world_size)
    if workers is not None:
        return device_workers(workers, device or torch.device("cpu"))  # ConfigError when < 0
    return max(1, default_workers() // world_size)


def _write_run_files(ctx: RunContext) -> None:
    atomic_write_text(ctx.path("config.yaml"), to_yaml(ctx.cfg))
    atomic_write_text(ctx.path("version"), f"histo-net {__version__}\n")
    write_splits_csv(ctx.path("splits.csv"), ctx.manifest.slides, ctx.split_by_slide)


def run_training(manifest: Path, out_dir: Path, cfg: TrainConfig, *, stage: str = "all",
                 resume: bool = False, device: str = "auto", workers: int | str | None = None,
                 progress: bool = True) -> Path:
    """Train tile CNN + MIL from ``manifest`` into ``out_dir``; returns ``out_dir/model.pt``.

    ``stage``: "tiles" (tiling + tile CNN), "features", "mil" (MIL, calibration, evaluation,
    bundle) or "all". ``resume`` continues stage 1 and stage 3 from their per-epoch
    checkpoints. Raises ``ConfigError`` on manifest/config problems before any tile is read.
    """
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
        seed_everything(cfg.seed, deterministic=cfg.deterministic)
        if dev.type == "cuda" and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        by_patient = patient_splits(tm.slides, val_fraction=cfg.split.val_fraction,
                                    test_fraction=cfg.split.test_fraction, seed=cfg.seed,
                                    k_folds=cfg.split.k_folds, fold=cfg.split.fold)
        ctx = RunContext(out_dir=out_dir, cfg=cfg, manifest=tm,
                         split_by_slide=slide_splits(tm.slides, by_patient), device=dev,
                         workers=resolve_workers(workers, world, dev), rank=rank, world_size=world,
                         progress=progress)
        target_head(ctx)  # target=subtype: every labelled slide needs a subtype (fail before tiling)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_run_files(ctx)
        dist.barrier()
        if cfg.frozen_encoder:
            frozen_encoder(cfg)  # fail before tiling: missing weights / file (exit 2)
        stage_tiles(ctx)
        if stage in ("tiles", "all"):
            stage_tile_cnn(ctx, resume=resume)
        if stage in ("features", "all"):
            stage_features(ctx)
        if stage in ("mil", "all"):
            if ctx.is_main:
                run_stage_mil(ctx, resume=resume)
            dist.barrier()
        return ctx.path("model.pt")
    finally:
        dist.cleanup()


def config_from_bundle(bundle: ModelBundle) -> TrainConfig:
    """The bundle's training config (unknown keys dropped) with its tiling and tile spec."""
    data = {k: v for k, v in bundle.training_config.items() if k in TrainConfig.model_fields}
    data["tiling"] = bundle.tiling_config().model_dump(mode="json")
    data["classes"] = None
    return build_config(TrainConfig, data, source="bundle training_config")


def overlapping_slides(bundle: ModelBundle, slides: list[SlideSpec]) -> dict[str, list[str]]:
    """Slides the bundle trained or validated on: ``{"by_sha256": [...ids], "by_slide_id": [...]}``.

    sha256 of the file bytes catches copies under other names; the slide id is reported
    too, but decides (:func:`_check_overlap`) only for training slides whose sha256 was not
    recorded. Bundles written before this was recorded match nothing.
    """
    ids: set[str] = set()
    hashes: set[str] = set()
    for split in bundle.training_slides.values():
        ids.update(split.get("slide_ids") or [])
        hashes.update(h for h in split.get("sha256") or [] if h)
    by_id = [s.slide_id for s in slides if s.slide_id in ids]
    by_sha = []
    if hashes:
        for s in slides:
            try:
                if sha256_file(s.path) in hashes:
                    by_sha.append(s.slide_id)
            except OSError:
                continue
    return {"by_sha256": by_sha, "by_slide_id": by_id}


def _check_overlap(bundle: ModelBundle, slides: list[SlideSpec], allow: bool) -> dict[str, object]:
    found = overlapping_slides(bundle, slides)
    # the sha256 decides where the bundle recorded it: synthetic cohorts (and many labs) reuse ids
    # like synth_000 for different files; an id decides only where its hash is unknown
    unhashed = {sid for split in bundle.training_slides.values()
                for sid, sha in zip(split.get("slide_ids") or [],
                                    list(split.get("sha256") or []) + [""] * len(split.get("slide_ids") or []))
                if not sha}
    both = sorted(set(found["by_sha256"]) | (set(found["by_slide_id"]) & unhashed))
    if len(found["by_slide_id"]) > len(set(found["by_slide_id"]) & set(both)):
        logger.info("some slide ids also name training slides of this model but the files differ "
                    "(sha256): those are evaluated as held out")
    summary: dict[str, object] = {"overlapping_slides": len(both), "by_sha256": len(found["by_sha256"]),
                                  "by_slide_id": len(found["by_slide_id"]), "allowed": bool(allow)}
    if not both:
        return summary
    text = (f"{len(both)} of {len(slides)} slides were used to train or validate this model "
            f"({len(found['by_sha256'])} by sha256, {len(found['by_slide_id'])} by slide id; "
            f"e.g. {', '.join(both[:3])})")
    if not allow:
        raise ConfigError(f"{text}; evaluate on held-out slides, or pass --allow-overlap")
    logger.warning("%s; included because of --allow-overlap: the figures are optimistic", text)
    summary["slide_ids"] = both
    return summary


def evaluate_bundle(bundle_path: Path, manifest: Path, out_dir: Path, *, device: str = "auto",
                    workers: int | None = None, progress: bool = False,
                    allow_overlap: bool = False,
                    encoder_weights: Path | None = None) -> EvalResult:
    """Evaluate a bundle on a labelled manifest; writes metrics.json, report.md and plots.

    Refuses (``ConfigError``) slides the model trained or validated on unless
    ``allow_overlap``. Tiles go to ``out_dir/tiles`` and features to ``out_dir/features``
    (cache keyed by the bundle's encoder hash and the tiles). Slides are tiled with the
    bundle's tiling settings, embedded, checked and decided with the same steps as
    ``predict``, so both make the same call. ``encoder_weights``: a pretrained encoder's
    weights file (else the path recorded at training time; the sha256 must match).
    """
    bundle = load_bundle(Path(bundle_path))
    encoder = bundle.build_encoder(torch.device("cpu"), encoder_weights=encoder_weights)  # fail early
    tm = validate_manifest(Path(manifest), bundle.class_names, require_two_classes=False)
    overlap = _check_overlap(bundle, list(tm.slides), allow_overlap)
    cfg = config_from_bundle(bundle)
    dev = select_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(out_dir=out_dir, cfg=cfg, manifest=tm,
                     split_by_slide={s.slide_id: "test" for s in tm.slides}, device=dev,
                     workers=resolve_workers(workers, 1, dev), progress=progress,
                     tile_class_names_override=list(bundle.tile_class_names))
    stage_tiles(ctx)
    enc_hash = bundle.encoder_hash()
    embed_all(ctx, encoder.to(dev), enc_hash, {"encoder_name": bundle.encoder_name})
    embs = load_embeddings(ctx, enc_hash)
    ev = eval_set(ctx, list(tm.slides), embs, bundle.build_mil(dev), bundle.domain_reference,
                  bundle.subtype_head)
    result = compute_metrics(
        ev, class_names=list(bundle.class_names), tile_class_names=list(bundle.tile_class_names),
        positive_class=bundle.positive_class, temperature=bundle.temperature,
        threshold=bundle.threshold, band=bundle.indeterminate_band,
        bootstrap_samples=cfg.evaluation.bootstrap_samples, ci_level=cfg.evaluation.ci_level,
        ece_bins=cfg.evaluation.ece_bins, seed=cfg.seed)
    write_evaluation(out_dir, result, ev, class_names=list(bundle.class_names),
                     positive_class=bundle.positive_class, temperature=bundle.temperature,
                     title=f"histo-net evaluation of {Path(bundle_path).name}",
                     extra={"manifest": str(Path(manifest).resolve()),
                            "bundle": str(Path(bundle_path).resolve()), "overlap": overlap,
                            "calibration_slides": bundle.calibration.get("n_slides"),
                            "model_warnings": list(bundle.guardrail_warnings)},
                     ece_bins=cfg.evaluation.ece_bins)
    return result
