"""Predict one slide end to end and write its report folder.

slide -> tissue + tiles (bundle's tile spec) -> embeddings + tile probabilities + QC
(one encoder pass) -> MIL logits + attention (one MIL pass) -> calibrated decision ->
report.json / report.html / heatmaps / tiles.geojson.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from histo_net import __version__
from histo_net.config import StrictModel, TilingConfig
from histo_net.device import resolve_workers
from histo_net.errors import NoTissueError
from histo_net.features.embed import SlideEmbedding, embed_slide
from histo_net.features.ood import tile_area_mm2
from histo_net.predict.model import LoadedModel, applied_band, predict_embedding
from histo_net.predict.summary import SlideSummary
from histo_net.report.model import GalleryTile, SlideReport
from histo_net.report.write import write_slide_report
from histo_net.wsi.inputs import SlideSpec
from histo_net.wsi.slide import Slide, open_slide
from histo_net.wsi.tiling import TilingResult
from histo_net.wsi.watchdog import tile_with_limit

logger = logging.getLogger(__name__)


class PredictConfig(StrictModel):
    """``histo-net predict`` settings (configs/predict.yaml). Tile size and mpp come from the bundle."""

    batch_size: int = Field(64, ge=1, description="tiles per encoder batch")
    workers: int | Literal["auto"] | None = Field(
        None, description="tile-reader worker processes: a number >= 0, 'auto' (histo_net.device."
                          "auto_workers: cores and device), or None = min(4, cores)")
    torch_compile: bool = Field(False, description="torch.compile the encoder forward (slow first "
                                                   "batch; pays on long GPU runs)")
    gallery_top_k: int = Field(8, ge=0, description="most-attended tiles shown in the report")
    gallery_bottom_k: int = Field(4, ge=0, description="least-attended tiles shown in the report")
    min_tiles: int = Field(4, ge=1, description="fewer tissue tiles than this is a failure (NoTissueError)")
    min_tissue_fraction: float | None = Field(
        None, ge=0, le=1, description="override the bundle's tiling min_tissue_fraction")


def tiling_config_for(model: LoadedModel, cfg: PredictConfig) -> TilingConfig:
    """The bundle's tiling settings (its tile spec enforced), with predict's overrides."""
    return model.bundle.tiling_config(cfg.min_tissue_fraction)


def _gallery(slide: Slide, tiling: TilingResult, order: np.ndarray, attention: np.ndarray,
             tile_probs: np.ndarray, tile_class_names: list[str]) -> list[GalleryTile]:
    tiles = []
    for i in order:
        xy = (int(tiling.coords[i, 0]), int(tiling.coords[i, 1]))
        tiles.append(GalleryTile(
            rgb=slide.read_tile(xy, tiling.plan), coords_level0=xy, attention=float(attention[i]),
            probs={name: float(p) for name, p in zip(tile_class_names, tile_probs[i])}))
    return tiles


def tile_for_predict(spec: SlideSpec, model: LoadedModel, cfg: PredictConfig,
                     slide_timeout_s: float | None = None) -> TilingResult:
    """Open + tissue + tiling + thumbnail under the per-slide wall-clock limit (a child
    process); ``NoTissueError`` below ``cfg.min_tiles`` tiles."""
    tiling = tile_with_limit(spec.path, spec.mpp, tiling_config_for(model, cfg), slide_timeout_s).result
    if len(tiling.coords) < cfg.min_tiles:
        raise NoTissueError(f"{spec.path}: only {len(tiling.coords)} tissue tile(s), need {cfg.min_tiles}")
    return tiling


def predict_slide(spec: SlideSpec, model: LoadedModel, slide_dir: Path, cfg: PredictConfig, *,
                  input_sha256: str, progress: bool = False,
                  slide_timeout_s: float | None = None) -> SlideSummary:
    """Run the whole pipeline for ``spec`` and write its report files into ``slide_dir``.

    One slide on its own (a fresh reader per call); batches of slides stream through
    :mod:`histo_net.predict.stream` with the same stages. Returns the slide's
    :class:`SlideSummary` for the batch record. Raises typed ``HistoNetError`` subclasses
    for bad input.
    """
    tiling = tile_for_predict(spec, model, cfg, slide_timeout_s)
    workers = None if cfg.workers is None else resolve_workers(cfg.workers, model.device)
    emb = embed_slide(model.encoder, spec.path, tiling.coords, tiling.plan, device=model.device,
                      batch_size=cfg.batch_size, workers=workers, mpp_override=spec.mpp,
                      progress=progress)
    return finish_slide(spec, model, slide_dir, cfg, tiling, emb, input_sha256=input_sha256)


def finish_slide(spec: SlideSpec, model: LoadedModel, slide_dir: Path, cfg: PredictConfig,
                 tiling: TilingResult, emb: SlideEmbedding, *, input_sha256: str) -> SlideSummary:
    """MIL + decision + gallery for an embedded slide, then its report files in ``slide_dir``."""
    bundle = model.bundle
    tiling_cfg = tiling_config_for(model, cfg)
    with open_slide(spec.path, mpp_override=spec.mpp) as slide:
        n_tiles = len(tiling.coords)
        decision, stats = predict_embedding(model, emb,
                                            tile_area=tile_area_mm2(tiling_cfg.stride, bundle.target_mpp))
        ranked = np.argsort(-decision.attention, kind="stable")
        top_k = min(cfg.gallery_top_k, n_tiles)
        bottom_k = min(cfg.gallery_bottom_k, max(n_tiles - top_k, 0))
        names = list(bundle.tile_class_names)
        top = _gallery(slide, tiling, ranked[:top_k], decision.attention, emb.tile_probs, names)
        bottom = _gallery(slide, tiling, ranked[::-1][:bottom_k], decision.attention, emb.tile_probs, names)
        mpp, mpp_source = slide.mpp, slide.mpp_source
        level0_size = (int(slide.dimensions[0]), int(slide.dimensions[1]))

    qc = {"blurred_fraction": stats.blurred_fraction, "warnings": [],  # failed checks: report.checks
          "tissue_area_mm2": float(tiling.tissue_area_mm2), "tile_count": n_tiles, "mpp": float(mpp),
          "mpp_source": mpp_source, "target_mpp": float(bundle.target_mpp),
          "tile_size_px": int(bundle.tile_size_px), "read_level": int(tiling.plan.level),
          "tumour_share": stats.tumour_share, "tumour_area_mm2": stats.tumour_area_mm2,
          "tumour_positive_tiles": stats.tumour_tiles,
          "embedding_distance": stats.embedding_distance}
    provenance = {
        "input_path": str(spec.path.resolve()), "input_sha256": input_sha256, "reader": slide.reader_name,
        "bundle_path": str(model.bundle_path), "bundle_sha256": model.bundle_sha256,
        "histo_net_version": __version__, "library_versions": dict(bundle.versions),
        "run_date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(model.device), "model_classes": list(bundle.class_names),
        "model_metrics": {k: v for k, v in bundle.metrics.items() if isinstance(v, (int, float))},
    }
    report = SlideReport(
        slide_id=spec.slide_id, slide_name=spec.path.name, predicted_class=decision.predicted_class,
        status=decision.status, outcome=decision.outcome, checks=list(decision.checks),
        model_figures=dict(bundle.validation_summary), model_warnings=list(bundle.guardrail_warnings),
        calibration=dict(bundle.calibration), probabilities=decision.probability_dict(),
        subtype_probabilities=dict(decision.subtype_probabilities),
        positive_class=bundle.positive_class, threshold=float(bundle.threshold),
        indeterminate_band=applied_band(bundle), tile_class_names=names,
        coords_level0=tiling.coords, patch_size_level0=int(tiling.plan.patch_size_level0),
        attention=decision.attention, tile_probs=emb.tile_probs, thumbnail=tiling.thumbnail,
        thumbnail_downsample=float(tiling.thumbnail_downsample), tissue_mask=tiling.tissue,
        tissue_downsample=float(tiling.tissue_downsample), top_tiles=top, bottom_tiles=bottom,
        qc=qc, provenance=provenance, label=spec.label, level0_size=level0_size)
    write_slide_report(slide_dir, report)
    return SlideSummary(predicted_class=decision.predicted_class or "", status=decision.status,
                        probabilities=decision.probability_dict(), tile_count=n_tiles,
                        input_sha256=input_sha256, bundle_sha256=model.bundle_sha256,
                        outcome=decision.outcome, reasons=[c.short() for c in decision.failed_checks],
                        subtype_probabilities=dict(decision.subtype_probabilities))
