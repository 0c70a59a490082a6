"""Slide checks against the training cohort: domain (not assessable) and tumour burden.

From one encoder pass (:class:`~histo_net.features.embed.SlideEmbedding`) each slide gets
:class:`SlideStats`: tiled tissue area, sharpness, stain descriptors, the kNN distance of
its tile embeddings to a bank of training tiles, and its tumour burden. A
:class:`DomainReference` fitted on training (and validation) slides holds one limit per
statistic, each a normal prediction bound (:func:`histo_net.calibration.prediction_limit`)
so that about ``alpha`` of in-distribution slides fail; :func:`assess_slide` compares.

Check groups (they decide the outcome in :mod:`histo_net.predict.decision`):
``image`` (tissue, sharpness, stain) -> not assessable; ``tumour`` (burden) -> no tumour
detected; ``embedding`` (kNN distance) -> not assessable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from histo_net.calibration import Limit, prediction_limit
from histo_net.features.knn import knn_distance, sample_bank
from histo_net.features.qc import QC_FEATURE_NAMES
from histo_net.features.tile_outliers import (
    fit_tile_ranges,
    outside_share,
    smoothed_fraction,
    smoothed_share,
)
from histo_net.features.tumour_burden import TumourTileRule, fit_tumour_tile_rule, positive_tiles
from histo_net.taxonomy import NON_TUMOUR

IMAGE, TUMOUR, EMBEDDING = "image", "tumour", "embedding"
#: a fitted tumour-burden limit that flags more of the reference (tumour) slides than this is
#: not used: the model cannot tell tumour-free tissue from tumour (a guardrail warning says so)
MAX_TUMOUR_FLAG_RATE = 0.25
#: a slide with more than this share of its tiles blurrier, or stained outside the range, of the
#: training tiles is not assessable, however few reference slides the fitted limit rests on
MAX_TILE_OUTLIER_SHARE = 0.5
#: the QC column whose per-tile upper range gives the "sharper than training" share
TEXTURE = "blur_laplacian_var"
#: stain descriptors (QC columns, slide median over tiles) checked two-sided
STAIN_DESCRIPTORS: tuple[str, ...] = ("od_r", "od_g", "od_b", "haematoxylin", "eosin", "dab")
#: sharpness = this percentile of the tiles' log10 Laplacian variance (low = blurred slide)
SHARPNESS_PERCENTILE = 25.0
#: reference slides are scored on this many random tiles (see :func:`fit_domain_reference`)
SCORE_TILES = 32
LABELS = {
    "tissue_mm2": "tiled tissue area (mm\u00b2)",
    "sharpness": f"sharpness (log10 Laplacian variance, {SHARPNESS_PERCENTILE:.0f}th percentile of tiles)",
    "embedding_distance": "tile-embedding distance to the training tiles (median kNN cosine distance)",
    "tumour_share": "tumour burden (probability-weighted share of tiles the tile classifier calls tumour)",
    "tumour_tiles": "tumour-positive tiles (limit: what tumour-free tissue of this many tiles reaches)",
    "blurred_fraction": "share of tiles blurrier than the training tiles (below their blur threshold)",
    "stain_outlier_fraction": "share of tiles whose stain lies outside the training tiles' range",
    "sharper_fraction": "share of tiles with more fine texture (Laplacian variance) than the training tiles",
    **{f"stain_{name}": f"stain: median {name} optical density" for name in STAIN_DESCRIPTORS},
}


@dataclass(frozen=True)
class DomainCheck:
    """One slide check: value vs limit. ``kind`` "min": fails below; "max": fails above."""

    name: str
    group: str
    label: str
    value: float
    limit: float
    kind: str
    passed: bool

    @property
    def operator(self) -> str:
        """How value and limit compare: ``<``/``>`` when failed, ``>=``/``<=`` when passed."""
        if self.passed:
            return ">=" if self.kind == "min" else "<="
        return "<" if self.kind == "min" else ">"

    def describe(self) -> str:
        """One line, e.g. ``tiled tissue area (mm²) 0.31 < limit 1.2``."""
        return f"{self.label} {self.value:.3g} {self.operator} limit {self.limit:.3g}"

    def short(self) -> str:
        """Compact form for tables and CSV, e.g. ``tissue_mm2 0.31 < 1.2``."""
        return f"{self.name.split(':')[0]} {self.value:.3g} {self.operator} {self.limit:.3g}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (with the one-line description)."""
        return {**asdict(self), "description": self.describe()}


@dataclass
class SlideStats:
    """Per-slide statistics the checks compare (NaN / None where not computable)."""

    n_tiles: int
    tissue_mm2: float
    sharpness: float
    blurred_fraction: float
    stain: dict[str, float]
    tumour_share: float | None
    tumour_area_mm2: float | None
    embedding_distance: float | None = None
    #: smoothed share of tiles outside the reference tiles' stain range (NaN: no ranges)
    stain_outlier_fraction: float = float("nan")
    #: smoothed share of tiles sharper than the reference tiles' range (real tissue vs drawn)
    sharper_fraction: float = float("nan")
    #: tiles with P(tumour) at or above the reference's tile threshold (None: no rule)
    tumour_tiles: int | None = None

    def values(self) -> dict[str, float | None]:
        """Check name -> value (tile shares smoothed, see :mod:`histo_net.features.tile_outliers`)."""
        out: dict[str, float | None] = {"tissue_mm2": self.tissue_mm2, "sharpness": self.sharpness}
        out["blurred_fraction"] = smoothed_fraction(self.blurred_fraction, self.n_tiles)
        out["stain_outlier_fraction"] = self.stain_outlier_fraction
        out["sharper_fraction"] = self.sharper_fraction
        out.update({f"stain_{k}": v for k, v in self.stain.items()})
        out["embedding_distance"] = self.embedding_distance
        out["tumour_share"] = self.tumour_share
        out["tumour_tiles"] = None if self.tumour_tiles is None else float(self.tumour_tiles)
        return out


def _group(name: str) -> str:
    return EMBEDDING if name == "embedding_distance" else TUMOUR if name.startswith("tumour_") else IMAGE


def tumour_probability(tile_probs: npt.ArrayLike, tile_class_names: Sequence[str]) -> np.ndarray | None:
    """(N,) P(tumour) = 1 - P(non_tumour) per tile; None when the tile CNN has no such class."""
    if NON_TUMOUR not in tile_class_names:
        return None
    probs = np.asarray(tile_probs, dtype=np.float64).reshape(-1, len(tile_class_names))
    return 1.0 - probs[:, list(tile_class_names).index(NON_TUMOUR)]


def slide_stats(features: npt.ArrayLike, tile_probs: npt.ArrayLike, qc: npt.ArrayLike, *,
                tile_class_names: Sequence[str], tile_area_mm2: float, blur_threshold: float | None,
                qc_names: Sequence[str] = QC_FEATURE_NAMES,
                stain_ranges: dict[str, tuple[float, float]] | None = None,
                tumour_tile_threshold: float | None = None) -> SlideStats:
    """Statistics of one slide from its (N,D) embeddings, (N,Ct) tile probabilities, (N,K) QC.

    ``tile_area_mm2``: tissue area one tile stands for (stride squared, at target mpp);
    ``blur_threshold``: Laplacian variance below which a tile counts as blurred;
    ``stain_ranges``: the reference tiles' per-descriptor stain range (outlier share);
    ``tumour_tile_threshold``: P(tumour) from which a tile counts as tumour-positive.
    The embedding distance is filled in by :meth:`DomainReference.embedding_distance`.
    """
    qc = np.asarray(qc, dtype=np.float64)
    n = len(np.asarray(features))
    names = list(qc_names)
    col = {name: names.index(name) for name in names} if qc.ndim == 2 and qc.shape[1] == len(names) else {}
    nan = float("nan")
    sharp, blurred = nan, nan
    if "blur_laplacian_var" in col and n:
        lap = qc[:, col["blur_laplacian_var"]]
        sharp = float(np.percentile(np.log10(np.maximum(lap, 1e-3)), SHARPNESS_PERCENTILE))
        blurred = float(np.mean(lap < blur_threshold)) if blur_threshold is not None else nan
    stain = {name: float(np.median(qc[:, col[name]])) if name in col and n else nan
             for name in STAIN_DESCRIPTORS}
    p_tumour = tumour_probability(tile_probs, tile_class_names)
    share = float(np.mean(p_tumour)) if p_tumour is not None and n else None
    area = float(np.sum(p_tumour)) * tile_area_mm2 if p_tumour is not None else None
    ranges = stain_ranges or {}
    stain_only = {k: v for k, v in ranges.items() if k in STAIN_DESCRIPTORS}
    outliers = outside_share(qc, col, stain_only) if stain_only and n else nan
    texture = ranges.get(TEXTURE)
    sharper = (smoothed_share(qc[:, col[TEXTURE]] > texture[1]) if texture and TEXTURE in col and n else nan)
    return SlideStats(n_tiles=n, tissue_mm2=n * float(tile_area_mm2), sharpness=sharp,
                      blurred_fraction=blurred, stain=stain, tumour_share=share, tumour_area_mm2=area,
                      stain_outlier_fraction=outliers, sharper_fraction=sharper,
                      tumour_tiles=(positive_tiles(p_tumour, tumour_tile_threshold)
                                    if p_tumour is not None and tumour_tile_threshold is not None else None))


@dataclass
class DomainReference:
    """Limits per statistic and the kNN bank of training tile embeddings (stored in the bundle).

    ``bank`` (M,D) float16 unit rows; ``alpha`` the target share of in-distribution slides
    failing a group of checks; ``fitted_on`` how many slides each limit rests on.
    """

    limits: dict[str, Limit]
    bank: np.ndarray
    knn_k: int
    alpha: float
    blur_threshold: float | None
    fitted_on: dict[str, int] = field(default_factory=dict)
    in_sample_flag_rate: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)
    #: per stain descriptor (and ``TEXTURE``), the reference tiles' central range (tile shares)
    tile_stain_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the no-tumour rule on the count of tumour-positive tiles (None: the share limit, if any)
    tumour_rule: TumourTileRule | None = None

    def embedding_distance(self, features: npt.ArrayLike) -> float | None:
        """Median over tiles of the kNN cosine distance to the bank; None without a bank."""
        if len(self.bank) == 0 or len(np.asarray(features)) == 0:
            return None
        return float(np.median(knn_distance(features, self.bank.astype(np.float32), self.knn_k)))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the weights-only bundle (the bank as a float16 tensor)."""
        import torch  # deferred: keeps this module numpy-only for the checks themselves

        return {"limits": {k: v.to_dict() for k, v in self.limits.items()},
                "bank": torch.from_numpy(np.ascontiguousarray(self.bank, dtype=np.float16)),
                "knn_k": int(self.knn_k), "alpha": float(self.alpha),
                "blur_threshold": self.blur_threshold, "fitted_on": dict(self.fitted_on),
                "in_sample_flag_rate": dict(self.in_sample_flag_rate),
                "diagnostics": dict(self.diagnostics),
                "tile_stain_range": {k: [float(lo), float(hi)] for k, (lo, hi) in self.tile_stain_range.items()},
                "tumour_rule": None if self.tumour_rule is None else self.tumour_rule.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DomainReference | None:
        """Inverse of :meth:`to_dict`; None for an empty or missing reference."""
        if not data:
            return None
        bank = data.get("bank")
        bank_np = (bank.detach().cpu().numpy() if hasattr(bank, "detach") else np.asarray(bank))
        return cls(limits={str(k): Limit.from_dict(v) for k, v in data["limits"].items()},
                   bank=bank_np.astype(np.float16).reshape(len(bank_np), -1) if len(bank_np) else
                   np.zeros((0, 0), np.float16),
                   knn_k=int(data.get("knn_k", 5)), alpha=float(data.get("alpha", 0.03)),
                   blur_threshold=None if data.get("blur_threshold") is None else float(data["blur_threshold"]),
                   fitted_on={str(k): int(v) for k, v in (data.get("fitted_on") or {}).items()},
                   in_sample_flag_rate={str(k): float(v) for k, v in
                                        (data.get("in_sample_flag_rate") or {}).items()},
                   diagnostics={str(k): float(v) for k, v in (data.get("diagnostics") or {}).items()},
                   tile_stain_range={str(k): (float(v[0]), float(v[1]))
                                     for k, v in (data.get("tile_stain_range") or {}).items()},
                   tumour_rule=TumourTileRule.from_dict(data.get("tumour_rule")))


def assess_slide(stats: SlideStats, reference: DomainReference | None) -> list[DomainCheck]:
    """Every check the reference has a limit for, in a fixed order (image, tumour, embedding)."""
    if reference is None:
        return []
    checks = []
    values = stats.values()
    for key, limit in reference.limits.items():
        name = key.split(":")[0]
        value = values.get(name)
        if value is None or not math.isfinite(float(value)) or not math.isfinite(limit.limit):
            continue
        checks.append(DomainCheck(name=key, group=_group(name), label=LABELS.get(name, name),
                                  value=float(value), limit=float(limit.limit), kind=limit.kind,
                                  passed=limit.passes(float(value))))
    rule = reference.tumour_rule
    if rule is not None and stats.tumour_tiles is not None:
        need = rule.min_tiles(stats.n_tiles)
        checks.append(DomainCheck(name="tumour_tiles:min", group=TUMOUR, label=LABELS["tumour_tiles"],
                                  value=float(stats.tumour_tiles), limit=float(need), kind="min",
                                  passed=stats.tumour_tiles >= need))
    order = {IMAGE: 0, TUMOUR: 1, EMBEDDING: 2}
    return sorted(checks, key=lambda c: order[c.group])


def group_passed(checks: Sequence[DomainCheck], group: str) -> bool:
    """True when every check of ``group`` passed (or none ran)."""
    return all(c.passed for c in checks if c.group == group)


def fit_domain_reference(slides: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                         tile_class_names: Sequence[str], tile_area: float, in_bank: Sequence[bool],
                         null_tumour_probs: Sequence[npt.ArrayLike] | None, alpha: float = 0.03,
                         alpha_tumour: float = 0.01, bank_size: int = 2048, knn_k: int = 5,
                         max_tumour_flag_rate: float = MAX_TUMOUR_FLAG_RATE,
                         blur_threshold: float | None = None, score_tiles: int = SCORE_TILES,
                         seed: int = 0) -> DomainReference:
    """Fit every limit on the reference slides (training + validation).

    Args:
        slides: per reference slide, (N_i,D) embeddings, (N_i,Ct) tile probabilities, (N_i,K) QC.
        tile_class_names, tile_area: as in :func:`slide_stats`.
        in_bank: per slide, True when its tiles go into the kNN bank (training slides; they
            are scored leave-one-slide-out), False for slides only scored (validation).
        null_tumour_probs: per annotated slide, the (M_i,) P(tumour) of its tumour-free tiles
            (what tumour-free tissue scores): the no-tumour rule on the count of tumour-positive
            tiles (:mod:`histo_net.features.tumour_burden`) is fitted on them. None (or too few):
            the no-tumour limit is the lower prediction bound of the slides' own tumour shares.
        alpha: share of in-distribution slides allowed to fail the image and embedding
            checks together (Bonferroni over their one-sided tails).
        alpha_tumour: the same for the tumour-burden check.
        max_tumour_flag_rate: a tumour-burden limit flagging more of the reference slides
            than this is dropped (recorded in ``diagnostics``).
        score_tiles: sharpness, stain and embedding distance of a reference slide are measured
            on a random ``score_tiles`` of its tiles, so the limits include the sampling noise
            of a slide that small (slides with more tiles are measured more precisely).
    """
    rng = np.random.default_rng(seed)
    owners = [i for i, b in enumerate(in_bank) if b]
    features = [np.asarray(f, dtype=np.float32) for f, _, _ in slides]
    bank, owner = sample_bank(features, owners, bank_size, rng)
    qc_cols = {name: i for i, name in enumerate(QC_FEATURE_NAMES)}
    ranges = fit_tile_ranges([np.asarray(q) for (_, _, q), b in zip(slides, in_bank) if b], qc_cols,
                             (*STAIN_DESCRIPTORS, TEXTURE))
    rule = fit_tumour_tile_rule(null_tumour_probs, alpha=alpha_tumour) if null_tumour_probs is not None else None
    stats, dist = [], np.full(len(slides), np.nan)
    for i, (f, p, q) in enumerate(slides):
        full = slide_stats(f, p, q, tile_class_names=tile_class_names, tile_area_mm2=tile_area,
                           blur_threshold=blur_threshold, stain_ranges=ranges,
                           tumour_tile_threshold=None if rule is None else rule.threshold)
        pick = np.sort(rng.choice(len(f), size=min(score_tiles, len(f)), replace=False)) if len(f) else []
        sub = slide_stats(features[i][pick], np.asarray(p)[pick], np.asarray(q)[pick],
                          tile_class_names=tile_class_names, tile_area_mm2=tile_area,
                          blur_threshold=blur_threshold)
        full.sharpness, full.stain = sub.sharpness, sub.stain
        if len(pick) and len(bank):
            exclude = np.broadcast_to(owner[None, :] == i, (len(pick), len(bank)))
            dist[i] = float(np.median(knn_distance(features[i][pick], bank, knn_k, exclude=exclude)))
            full.embedding_distance = float(dist[i])
        stats.append(full)
    tails = 2 + 2 * len(STAIN_DESCRIPTORS) + 1 + 3
    a = alpha / tails
    col = {k: np.array([np.nan if v is None else float(v) for v in (s.values()[k] for s in stats)])
           for k in stats[0].values()} if stats else {}
    limits: dict[str, Limit] = {}
    if col:
        limits["tissue_mm2:min"] = prediction_limit(col["tissue_mm2"], alpha=a, kind="min", transform="log",
                                                    min_scale=0.01)
        limits["sharpness:min"] = prediction_limit(col["sharpness"], alpha=a, kind="min", min_scale=0.01)
        for name in STAIN_DESCRIPTORS:
            # optical densities are positive (log scale); deconvolved concentrations take either sign
            transform = "log" if name.startswith("od_") else "none"
            for kind in ("min", "max"):
                limits[f"stain_{name}:{kind}"] = prediction_limit(
                    col[f"stain_{name}"], alpha=a, kind=kind, transform=transform, min_scale=0.01)
        # tile shares: per-tile ranges from thousands of reference tiles keep these sharp
        for name in ("blurred_fraction", "stain_outlier_fraction", "sharper_fraction"):
            fitted = prediction_limit(col[name], alpha=a, kind="max", transform="logit", min_scale=0.1)
            limits[f"{name}:max"] = dataclasses.replace(fitted, limit=min(fitted.limit, MAX_TILE_OUTLIER_SHARE))
        limits["embedding_distance:max"] = prediction_limit(col["embedding_distance"], alpha=a, kind="max",
                                                            transform="log", min_scale=0.01)
    if rule is None and col and np.isfinite(col["tumour_share"]).sum() >= 2:
        limits["tumour_share:min"] = prediction_limit(col["tumour_share"], alpha=alpha_tumour, kind="min",
                                                      transform="logit")
    reference = DomainReference(limits=limits, bank=bank.astype(np.float16), knn_k=knn_k, alpha=alpha,
                                blur_threshold=blur_threshold, tile_stain_range=ranges, tumour_rule=rule,
                                fitted_on={"slides": len(stats), "bank_slides": len(owners),
                                           "bank_tiles": len(bank),
                                           "null_slides": 0 if rule is None else rule.n_slides,
                                           "null_tiles": 0 if rule is None else rule.n_tiles})
    checks = [assess_slide(s, reference) for s in stats]
    for group in (IMAGE, TUMOUR, EMBEDDING):
        failed = [not group_passed(c, group) for c in checks]
        reference.in_sample_flag_rate[group] = float(np.mean(failed)) if failed else 0.0
    bank_mask = np.asarray(in_bank, dtype=bool)
    for name, mask in (("embedding_distance_median_bank_slides_loo", bank_mask),
                       ("embedding_distance_median_other_slides", ~bank_mask)):
        vals = dist[mask & np.isfinite(dist)] if len(dist) else np.zeros(0)
        if len(vals):
            reference.diagnostics[name] = float(np.median(vals))
    if rule is not None:
        reference.diagnostics["tumour_tile_threshold"] = rule.threshold
        reference.diagnostics["tumour_free_positive_tile_rate"] = rule.null_rate
    rate = reference.in_sample_flag_rate.get(TUMOUR, 0.0)
    if ("tumour_share:min" in limits or rule is not None) and rate > max_tumour_flag_rate:
        # the tile head does not separate tumour from tumour-free tissue well enough: a limit that
        # calls the model's own tumour slides "no tumour" would fire on everything, so it is dropped
        limits.pop("tumour_share:min", None)
        reference.tumour_rule = None
        reference.diagnostics["tumour_check_disabled_in_sample_flag_rate"] = rate
        reference.in_sample_flag_rate[TUMOUR] = 0.0
    return reference


def tile_area_mm2(stride_px: int, target_mpp: float) -> float:
    """Tissue area one grid tile stands for: (stride x mpp)^2 in mm^2."""
    return (float(stride_px) * float(target_mpp) / 1000.0) ** 2


def check_slide(reference: DomainReference | None, features: npt.ArrayLike, tile_probs: npt.ArrayLike,
                qc: npt.ArrayLike, *, tile_class_names: Sequence[str], tile_area: float
                ) -> tuple[SlideStats, list[DomainCheck]]:
    """The ONE slide-check step (prediction and evaluation): statistics, then every check."""
    stats = slide_stats(features, tile_probs, qc, tile_class_names=tile_class_names,
                        tile_area_mm2=tile_area,
                        blur_threshold=None if reference is None else reference.blur_threshold,
                        stain_ranges=None if reference is None else reference.tile_stain_range,
                        tumour_tile_threshold=(reference.tumour_rule.threshold if reference is not None
                                               and reference.tumour_rule is not None else None))
    if reference is not None:
        stats.embedding_distance = reference.embedding_distance(features)
    return stats, assess_slide(stats, reference)
