#!/usr/bin/env python
"""Simple baselines on a synthetic (or any annotated) cohort: can trivial features solve it?

Usage:
  scripts/benchmark_baselines.py TRAIN/manifest.csv [EVAL/manifest.csv]
      [--run RUN_DIR] [--eval-dir EVAL_DIR] [--json OUT.json] [--tiles-per-slide 48]

On tumour tiles (tile footprint wholly inside the tumour mask; 128 px at 0.5 um/px, the
default training tile spec; a capped seeded sample per slide) a standardised logistic
regression is fitted on each feature set, with patient-grouped cross-validation on TRAIN
and, given EVAL, trained on TRAIN and tested on EVAL:
  (a) rgb       RGB mean + std
  (b) density   haematoxylin optical density statistics and dark-pixel fractions
  (c) histogram 16-bin grey histogram + log Laplacian variance
  (d) bandpass  four difference-of-Gaussian log-energies (sigma 0.7 to 11 px)
  (e) all       (a)-(d) together
  (e') all_via_subtype  (a)-(d) through a multinomial fit on ``subtype``, the label score being
                the summed probability of the neuroendocrine subtypes (what a subtype-aware
                linear model of global statistics gets)
  (f) meanpool  mean of the tile CNN's embeddings over all tiles of a slide (needs --run
                for TRAIN features RUN/features/<id>.h5 and --eval-dir for EVAL features,
                as written by ``histo-net evaluate --out EVAL_DIR``)
and histo-net's own slide AUROC from EVAL_DIR/metrics.json.
Slide score = mean tile probability; 95% bootstrap CIs over slides. The subtype column is
the macro one-vs-rest AUROC of a multinomial fit on ``subtype`` (where the manifest has it).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, laplace
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from histo_net.config import TilingConfig
from histo_net.features.store import read_features_h5
from histo_net.metrics import auroc, bootstrap_ci
from histo_net.stain import rgb_to_hed
from histo_net.wsi.slide import open_slide
from histo_net.wsi.tiling import tile_slide

TILE_PX = 128
TARGET_MPP = 0.5
DOG_SIGMAS_PX = (0.7, 1.4, 2.8, 5.6, 11.0)
FEATURE_SETS = ("rgb", "density", "histogram", "bandpass", "all")
LETTER = {"rgb": "a", "density": "b", "histogram": "c", "bandpass": "d", "all": "e", "all_via_subtype": "e'",
          "meanpool": "f"}


# ------------------------------------------------------------------ features
def _grey(tile: np.ndarray) -> np.ndarray:
    return tile.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def rgb_features(tile: np.ndarray) -> np.ndarray:
    """(6,) per-channel RGB mean and standard deviation of a (H, W, 3) uint8 tile."""
    flat = tile.reshape(-1, 3).astype(np.float64)
    return np.concatenate([flat.mean(0), flat.std(0)])


def haematoxylin_od(tile: np.ndarray) -> np.ndarray:
    """(H, W) haematoxylin optical density by colour deconvolution (Ruifrok & Johnston)."""
    return rgb_to_hed(tile)[..., 0] / np.log(10.0)  # decadic OD, the package's one stain matrix


def density_features(tile: np.ndarray) -> np.ndarray:
    """(12,) nuclear density: H optical density mean, std, 50/75/90/95th percentiles, fraction
    above 0.25/0.5/0.75, and grey-level dark-pixel fractions (< 100, < 130, < 160)."""
    h = haematoxylin_od(tile)
    grey = _grey(tile)
    return np.array([h.mean(), h.std(), *np.percentile(h, [50, 75, 90, 95]),
                     (h > 0.25).mean(), (h > 0.5).mean(), (h > 0.75).mean(),
                     (grey < 100).mean(), (grey < 130).mean(), (grey < 160).mean()])


def histogram_features(tile: np.ndarray) -> np.ndarray:
    """(17,) 16-bin grey histogram (fractions) and log variance of the Laplacian."""
    grey = _grey(tile)
    hist = np.histogram(grey, bins=16, range=(0, 256))[0] / grey.size
    return np.concatenate([hist, [np.log(laplace(grey).var() + 1e-6)]])


def bandpass_features(tile: np.ndarray) -> np.ndarray:
    """(4,) log mean energy of difference-of-Gaussian bands of the grey tile, sigma
    0.7-1.4, 1.4-2.8, 2.8-5.6, 5.6-11 px."""
    grey = _grey(tile)
    blurred = [gaussian_filter(grey, s, mode="reflect") for s in DOG_SIGMAS_PX]
    return np.array([np.log(np.mean((a - b) ** 2) + 1e-6) for a, b in itertools.pairwise(blurred)])


def all_features(tile: np.ndarray) -> dict[str, np.ndarray]:
    """Every tile feature set (a)-(d) of one tile, by name."""
    return {"rgb": rgb_features(tile), "density": density_features(tile),
            "histogram": histogram_features(tile), "bandpass": bandpass_features(tile)}


# ------------------------------------------------------------------ cohorts
@dataclass
class Cohort:
    """Tumour-tile features of one cohort: per tile arrays and per slide metadata."""

    name: str
    feats: dict[str, np.ndarray] = field(default_factory=dict)  # set -> (N, K)
    tile_slide: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) slide index
    slide_ids: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    subtypes: list[str] = field(default_factory=list)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if (r.get("label") or "").strip()]


def tumour_tiles(row: dict[str, str], base: Path, cap: int, seed: int) -> list[np.ndarray]:
    """Up to ``cap`` tiles (128 px at 0.5 um/px, the training grid) wholly inside the tumour mask."""
    mask = np.asarray(Image.open(base / row["mask"])) > 127
    ds = int(row["mask_downsample"])
    with open_slide(base / row["path"]) as slide:
        result = tile_slide(slide, TilingConfig(target_mpp=TARGET_MPP, tile_size_px=TILE_PX))
        p = result.plan.patch_size_level0
        keep = []
        for k, (x, y) in enumerate(result.coords):
            x0, y0, x1, y1 = x // ds, y // ds, -(-(x + p) // ds), -(-(y + p) // ds)
            if y1 <= mask.shape[0] and x1 <= mask.shape[1] and mask[y0:y1, x0:x1].all():
                keep.append(k)
        rng = np.random.default_rng([seed, int(row.get("seed") or 0)])
        chosen = sorted(rng.permutation(keep)[:cap].tolist()) if keep else []
        return [slide.read_tile((int(result.coords[k][0]), int(result.coords[k][1])), result.plan)
                for k in chosen]


def load_cohort(manifest: Path, cap: int, seed: int) -> Cohort:
    """Read tumour tiles of every labelled slide of ``manifest`` and compute their features."""
    base = manifest.resolve().parent
    rows = _rows(manifest)
    cohort = Cohort(manifest.parent.name or str(manifest))
    per_set: dict[str, list[np.ndarray]] = {k: [] for k in FEATURE_SETS}
    tile_slide: list[int] = []
    t0 = time.perf_counter()
    for i, row in enumerate(rows):
        tiles = tumour_tiles(row, base, cap, seed)
        cohort.slide_ids.append(row["slide_id"])
        cohort.patients.append(row["patient_id"])
        cohort.labels.append(row["label"])
        cohort.subtypes.append(row.get("subtype", ""))
        for tile in tiles:
            f = all_features(tile)
            for k, v in f.items():
                per_set[k].append(v)
            per_set["all"].append(np.concatenate([f[k] for k in FEATURE_SETS[:-1]]))
            tile_slide.append(i)
        print(f"\r{manifest}: {i + 1}/{len(rows)} slides, {len(tile_slide)} tumour tiles, "
              f"{time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    cohort.feats = {k: np.asarray(v, np.float64) for k, v in per_set.items()}
    cohort.tile_slide = np.asarray(tile_slide, np.int64)
    return cohort


# ------------------------------------------------------------------ models
def _model() -> Pipeline:
    """Standardised logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))


def _cv_proba(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold class probabilities (N, C) with folds grouped by patient."""
    n_groups = len(set(groups.tolist()))
    folds = max(2, min(folds, n_groups, int(np.bincount(y).min()) if len(y) else 2))
    out = np.zeros((len(y), int(y.max()) + 1))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y, groups):
        model = _model().fit(x[train], y[train])
        out[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return out


def _slide_mean(proba: np.ndarray, tile_slide: np.ndarray, n_slides: int) -> np.ndarray:
    """(S, C) mean tile probability per slide (nan rows for slides without tiles)."""
    out = np.full((n_slides, proba.shape[1]), np.nan)
    for s in range(n_slides):
        sel = tile_slide == s
        if sel.any():
            out[s] = proba[sel].mean(0)
    return out


@dataclass
class Score:
    """AUROCs of one baseline on one evaluation (CV or cross-cohort)."""

    tile_auroc: float = float("nan")
    slide_auroc: float = float("nan")
    slide_ci: tuple[float, float] = (float("nan"), float("nan"))
    subtype_tile_auroc: float = float("nan")
    subtype_slide_auroc: float = float("nan")
    n_slides: int = 0
    n_tiles: int = 0


def _auroc_ci(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> tuple[float, tuple[float, float]]:
    ok = np.isfinite(s) if s.ndim == 1 else np.isfinite(s).all(1)
    auc = auroc(y[ok], s[ok])
    ci = bootstrap_ci(auroc, y[ok], s[ok], n_boot=n_boot, seed=seed) if n_boot > 0 else (np.nan, np.nan)
    return float(auc), (float(ci[0]), float(ci[1]))


def _encode(values: list[str], classes: list[str]) -> np.ndarray:
    return np.array([classes.index(v) for v in values], np.int64)


def _subtype_proba(train: Cohort, test: Cohort | None, name: str, subtypes: list[str],
                   seed: int) -> np.ndarray:
    """(tiles, subtypes) multinomial probabilities on feature set ``name``: CV on ``train``
    (``test`` None) or fit on ``train`` and score ``test``."""
    ys_tr = _encode(train.subtypes, subtypes)[train.tile_slide]
    if test is None:
        return _cv_proba(train.feats[name], ys_tr, np.asarray(train.patients)[train.tile_slide], 5, seed)
    model = _model().fit(train.feats[name], ys_tr)
    sp = np.zeros((len(test.tile_slide), len(subtypes)))
    sp[:, model.classes_] = model.predict_proba(test.feats[name])
    return sp


def _subtype_scores(score: Score, target: Cohort, sp: np.ndarray, subtypes: list[str]) -> None:
    """Macro one-vs-rest subtype AUROC of ``sp`` at tile and slide level, into ``score``."""
    ys = _encode(target.subtypes, subtypes)
    score.subtype_tile_auroc = float(auroc(ys[target.tile_slide], sp))
    sp_slide = _slide_mean(sp, target.tile_slide, len(target.slide_ids))
    ok = np.isfinite(sp_slide).all(1)
    score.subtype_slide_auroc = float(auroc(ys[ok], sp_slide[ok]))


def evaluate_via_subtype(train: Cohort, test: Cohort | None, n_boot: int, seed: int,
                         positive_label: str = "neuroendocrine") -> Score:
    """(e'): all features -> multinomial subtype fit -> label score = summed probability of the
    subtypes whose slides carry ``positive_label`` in ``train``."""
    subtypes = sorted(set(train.subtypes) - {""})
    target = test or train
    score = Score(n_slides=len(target.slide_ids), n_tiles=len(target.tile_slide))
    if len(subtypes) < 3 or not set(target.subtypes) <= set(subtypes):
        return score
    positive = [subtypes.index(s) for s in subtypes
                if any(lab == positive_label for lab, st in zip(train.labels, train.subtypes) if st == s)]
    sp = _subtype_proba(train, test, "all", subtypes, seed)
    y_slide = (np.asarray(target.labels) == positive_label).astype(int)
    p_tile = sp[:, positive].sum(1)
    score.tile_auroc = float(auroc(y_slide[target.tile_slide], p_tile))
    p_slide = _slide_mean(p_tile[:, None], target.tile_slide, len(target.slide_ids))[:, 0]
    score.slide_auroc, score.slide_ci = _auroc_ci(y_slide, p_slide, n_boot, seed)
    _subtype_scores(score, target, sp, subtypes)
    return score


def evaluate_tiles(train: Cohort, test: Cohort | None, name: str, n_boot: int, seed: int) -> Score:
    """CV on ``train`` (``test`` None) or fit on ``train`` and score ``test``, for feature set ``name``."""
    labels = sorted(set(train.labels))
    subtypes = sorted(set(train.subtypes) - {""})
    target = test or train
    y_slide = _encode(target.labels, labels)
    x_tr = train.feats[name]
    y_tr = _encode(train.labels, labels)[train.tile_slide]
    if test is None:
        groups = np.asarray(train.patients)[train.tile_slide]
        proba = _cv_proba(x_tr, y_tr, groups, 5, seed)
    else:
        proba = _model().fit(x_tr, y_tr).predict_proba(test.feats[name])
    score = Score(n_slides=len(target.slide_ids), n_tiles=len(target.tile_slide))
    y_tile = y_slide[target.tile_slide]
    # class 0 (alphabetical: neuroendocrine) is the positive class
    score.tile_auroc = float(auroc((y_tile == 0).astype(int), proba[:, 0]))
    slide_p = _slide_mean(proba, target.tile_slide, len(target.slide_ids))[:, 0]
    score.slide_auroc, score.slide_ci = _auroc_ci((y_slide == 0).astype(int), slide_p, n_boot, seed)
    if len(subtypes) > 2 and set(target.subtypes) <= set(subtypes):
        _subtype_scores(score, target, _subtype_proba(train, test, name, subtypes, seed), subtypes)
    return score


def _mean_embeddings(folder: Path, cohort: Cohort) -> np.ndarray:
    out = []
    for sid in cohort.slide_ids:
        emb, _, _ = read_features_h5(folder / "features" / f"{sid}.h5")
        out.append(emb.features.mean(0))
    return np.asarray(out, np.float64)


def evaluate_meanpool(train: Cohort, run_dir: Path, test: Cohort | None, eval_dir: Path | None,
                      n_boot: int, seed: int) -> Score:
    """(f): logistic regression on per-slide mean embeddings (CV on train, or train -> eval)."""
    labels = sorted(set(train.labels))
    x_tr = _mean_embeddings(run_dir, train)
    y_tr = _encode(train.labels, labels)
    if test is None or eval_dir is None:
        proba = _cv_proba(x_tr, y_tr, np.asarray(train.patients), 5, seed)
        target, x_te = train, None
    else:
        target, x_te = test, _mean_embeddings(eval_dir, test)
        proba = _model().fit(x_tr, y_tr).predict_proba(x_te)
    y = (_encode(target.labels, labels) == 0).astype(int)
    score = Score(n_slides=len(target.slide_ids))
    score.slide_auroc, score.slide_ci = _auroc_ci(y, proba[:, 0], n_boot, seed)
    subtypes = sorted(set(train.subtypes) - {""})
    if len(subtypes) > 2 and set(target.subtypes) <= set(subtypes):
        ys_tr = _encode(train.subtypes, subtypes)
        if x_te is None:
            sp = _cv_proba(x_tr, ys_tr, np.asarray(train.patients), 5, seed)
        else:
            model = _model().fit(x_tr, ys_tr)
            sp = np.zeros((len(x_te), len(subtypes)))
            sp[:, model.classes_] = model.predict_proba(x_te)
        score.subtype_slide_auroc = float(auroc(_encode(target.subtypes, subtypes), sp))
    return score


# ------------------------------------------------------------------ report
def _f(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.3f}"


def _ci(ci: tuple[float, float]) -> str:
    return "" if not all(np.isfinite(ci)) else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def format_table(results: dict[str, dict[str, Score]], histo: dict[str, object] | None) -> str:
    """One markdown table: per baseline, CV and cross-cohort tile / slide / subtype AUROC."""
    head = ("| baseline | CV tile | CV slide [95% CI] | CV subtype slide | cross tile | "
            "cross slide [95% CI] | cross subtype slide |")
    lines = [head, "|" + "---|" * 7]
    for name, by in results.items():
        cv, cross = by.get("cv", Score()), by.get("cross", Score())
        lines.append(f"| ({LETTER[name]}) {name} | {_f(cv.tile_auroc)} | {_f(cv.slide_auroc)}{_ci(cv.slide_ci)}"
                     f" | {_f(cv.subtype_slide_auroc)} | {_f(cross.tile_auroc)} | "
                     f"{_f(cross.slide_auroc)}{_ci(cross.slide_ci)} | {_f(cross.subtype_slide_auroc)} |")
    if histo is not None:
        auc = float(histo.get("slide_auroc", float("nan")))  # type: ignore[arg-type]
        ci = histo.get("slide_auroc_ci") or [float("nan"), float("nan")]
        ci_t = (float(ci[0]) if ci[0] is not None else np.nan, float(ci[1]) if ci[1] is not None else np.nan)  # type: ignore[index]
        lines.append(f"| histo-net (CNN + attention MIL) | - | - | - | - | {_f(auc)}{_ci(ci_t)} | - |")
    return "\n".join(lines)


def _as_json(s: Score) -> dict[str, object]:
    def clean(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return {"tile_auroc": clean(s.tile_auroc), "slide_auroc": clean(s.slide_auroc),
            "slide_auroc_ci": [clean(s.slide_ci[0]), clean(s.slide_ci[1])],
            "subtype_tile_auroc": clean(s.subtype_tile_auroc),
            "subtype_slide_auroc": clean(s.subtype_slide_auroc), "n_slides": s.n_slides,
            "n_tiles": s.n_tiles}


def main(argv: list[str] | None = None) -> int:
    """Compute the baselines, print the table, optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("train", type=Path, help="TRAIN cohort manifest.csv")
    ap.add_argument("eval", type=Path, nargs="?", default=None, help="EVAL cohort manifest.csv")
    ap.add_argument("--run", type=Path, default=None, help="histo-net training run (RUN/features/*.h5)")
    ap.add_argument("--eval-dir", type=Path, default=None,
                    help="histo-net evaluate --out folder (features/*.h5, metrics.json)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--tiles-per-slide", type=int, default=48, help="tumour tiles sampled per slide")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples for slide CIs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    train = load_cohort(args.train, args.tiles_per_slide, args.seed)
    test = load_cohort(args.eval, args.tiles_per_slide, args.seed) if args.eval else None
    results: dict[str, dict[str, Score]] = {}
    for name in FEATURE_SETS:
        results[name] = {"cv": evaluate_tiles(train, None, name, args.bootstrap, args.seed)}
        if test is not None:
            results[name]["cross"] = evaluate_tiles(train, test, name, args.bootstrap, args.seed)
    results["all_via_subtype"] = {"cv": evaluate_via_subtype(train, None, args.bootstrap, args.seed)}
    if test is not None:
        results["all_via_subtype"]["cross"] = evaluate_via_subtype(train, test, args.bootstrap, args.seed)
    if args.run is not None:
        results["meanpool"] = {"cv": evaluate_meanpool(train, args.run, None, None, args.bootstrap, args.seed)}
        if test is not None and args.eval_dir is not None:
            results["meanpool"]["cross"] = evaluate_meanpool(train, args.run, test, args.eval_dir,
                                                             args.bootstrap, args.seed)
    histo = None
    if args.eval_dir is not None and (args.eval_dir / "metrics.json").is_file():
        histo = json.loads((args.eval_dir / "metrics.json").read_text(encoding="utf-8"))
    table = format_table(results, histo)
    print(f"train {args.train}: {len(train.slide_ids)} slides, {len(train.tile_slide)} tumour tiles"
          + (f"; eval {args.eval}: {len(test.slide_ids)} slides, {len(test.tile_slide)} tumour tiles"
             if test is not None else ""))
    print(table)
    print(f"({time.perf_counter() - t0:.0f} s; AUROC of neuroendocrine vs other_small_round_cell; "
          "slide score = mean tile probability; subtype = macro one-vs-rest)")
    if args.json is not None:
        payload = {"train": str(args.train), "eval": str(args.eval) if args.eval else None,
                   "tiles_per_slide": args.tiles_per_slide,
                   "results": {k: {m: _as_json(s) for m, s in v.items()} for k, v in results.items()},
                   "histo_net": ({k: histo.get(k) for k in ("slide_auroc", "slide_auroc_ci", "tile_auroc",
                                                            "balanced_accuracy")} if histo else None),
                   "table": table}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
