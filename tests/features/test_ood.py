"""Slide checks: limits fitted on a reference cohort flag few in-distribution slides and catch
each kind of out-of-domain slide (too little tissue, blur, stain, embedding outlier, no tumour)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histo_net.features.knn import knn_distance, normalise_rows
from histo_net.features.ood import (
    EMBEDDING,
    IMAGE,
    TUMOUR,
    DomainReference,
    check_slide,
    fit_domain_reference,
    group_passed,
)
from histo_net.features.qc import QC_FEATURE_NAMES

TILE_CLASSES = ["non_tumour", "neuroendocrine", "other_small_round_cell"]
DIM = 16
AREA = 0.004  # mm^2 per tile


class Cohort:
    """Slides as arrays: embeddings around one centre, QC descriptors, tile probabilities."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.centre = np.random.default_rng(99).normal(0, 1, DIM) + 3.0

    def slide(self, *, n: int | None = None, shift: float = 0.0, eosin: float = 1.0, blur: float = 1.0,
              tumour: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        n = n if n is not None else int(rng.integers(150, 250))
        feats = self.centre + rng.normal(0, 1.0, (n, DIM)) + shift * np.eye(DIM)[0] * 8
        qc = np.zeros((n, len(QC_FEATURE_NAMES)))
        col = {name: i for i, name in enumerate(QC_FEATURE_NAMES)}
        slide_gain = rng.lognormal(0, 0.08)
        qc[:, col["blur_laplacian_var"]] = rng.lognormal(np.log(400), 0.3, n) * blur
        for name, base in (("od_r", 0.5), ("od_g", 0.8), ("od_b", 0.45), ("haematoxylin", 0.4),
                           ("eosin", 0.35)):
            qc[:, col[name]] = base * slide_gain * rng.lognormal(0, 0.1, n)
        qc[:, col["eosin"]] *= eosin
        qc[:, col["dab"]] = rng.normal(0.0, 0.01, n)
        qc[:, col["tissue_pixel_fraction"]] = 0.9
        share = tumour if tumour is not None else float(rng.uniform(0.15, 0.45))
        is_tumour = rng.random(n) < share
        p_t = np.where(is_tumour, rng.uniform(0.9, 1.0, n), rng.uniform(0.0, 0.04, n))
        probs = np.stack([1 - p_t, p_t / 2, p_t / 2], axis=1)
        return feats.astype(np.float32), probs.astype(np.float32), qc.astype(np.float32)

    def reference(self, n_slides: int = 30) -> DomainReference:
        slides, null = [], []
        for _ in range(n_slides):
            f, p, q = self.slide()
            slides.append((f, p, q))
            outside = p[:, 0] > 0.5
            null.append(1 - p[outside, 0])
        return fit_domain_reference(slides, tile_class_names=TILE_CLASSES, tile_area=AREA,
                                    in_bank=[i < 20 for i in range(n_slides)],
                                    null_tumour_probs=null, bank_size=1024,
                                    blur_threshold=100.0, seed=0)


def _groups(ref: DomainReference, f: np.ndarray, p: np.ndarray, q: np.ndarray) -> dict[str, bool]:
    _, checks = check_slide(ref, f, p, q, tile_class_names=TILE_CLASSES, tile_area=AREA)
    return {g: group_passed(checks, g) for g in (IMAGE, TUMOUR, EMBEDDING)}


@pytest.fixture(scope="module")
def cohort_and_reference() -> tuple[Cohort, DomainReference]:
    cohort = Cohort(1)
    return cohort, cohort.reference()


def test_in_distribution_slides_are_rarely_flagged(cohort_and_reference) -> None:
    cohort, ref = cohort_and_reference
    flagged = [not all(_groups(ref, *cohort.slide()).values()) for _ in range(150)]
    assert np.mean(flagged) <= 0.06, np.mean(flagged)
    assert ref.fitted_on["slides"] == 30 and ref.fitted_on["bank_slides"] == 20
    assert set(ref.in_sample_flag_rate) == {IMAGE, TUMOUR, EMBEDDING}


@pytest.mark.parametrize("kind, group", [("few_tiles", IMAGE), ("blur", IMAGE), ("stain", IMAGE),
                                         ("embedding", EMBEDDING), ("no_tumour", TUMOUR)])
def test_each_out_of_domain_slide_fails_its_check(cohort_and_reference, kind: str, group: str) -> None:
    cohort, ref = cohort_and_reference
    settings = {"few_tiles": {"n": 12}, "blur": {"blur": 0.05}, "stain": {"eosin": 2.5},
                "embedding": {"shift": 1.0}, "no_tumour": {"tumour": 0.0}}[kind]
    result = _groups(ref, *cohort.slide(**settings))
    assert not result[group], (kind, result)
    others = {g: ok for g, ok in result.items() if g != group}
    assert all(others.values()), (kind, result)  # only the intended check group fails


def test_failed_check_says_value_and_limit(cohort_and_reference) -> None:
    cohort, ref = cohort_and_reference
    _, checks = check_slide(ref, *cohort.slide(eosin=2.5), tile_class_names=TILE_CLASSES, tile_area=AREA)
    failed = [c for c in checks if not c.passed]
    assert failed and failed[0].name == "stain_eosin:max" and failed[0].value > failed[0].limit
    assert "eosin" in failed[0].describe() and "> limit" in failed[0].describe()
    assert failed[0].short().startswith("stain_eosin ")


def test_knn_leave_one_slide_out() -> None:
    rng = np.random.default_rng(0)
    bank = normalise_rows(rng.normal(0, 1, (40, 8)))
    query = bank[:5].copy()
    assert np.allclose(knn_distance(query, bank, k=1), 0.0, atol=1e-6)
    exclude = np.zeros((5, 40), bool)
    exclude[:, :5] = True
    assert (knn_distance(query, bank, k=1, exclude=exclude) > 0.05).all()


def test_reference_round_trips_through_a_bundle(cohort_and_reference, tmp_path: Path) -> None:
    from histo_net.models.bundle import load_bundle, save_bundle
    from histo_net.models.untrained import untrained_bundle

    cohort, ref = cohort_and_reference
    bundle = untrained_bundle(tile_size_px=32)
    bundle.domain_reference = ref
    save_bundle(tmp_path / "model.pt", bundle)
    back = load_bundle(tmp_path / "model.pt").domain_reference
    assert back is not None and back.limits == ref.limits and back.bank.shape == ref.bank.shape
    assert back.tumour_rule == ref.tumour_rule and ref.tumour_rule is not None
    f, p, q = cohort.slide()
    a = check_slide(ref, f, p, q, tile_class_names=TILE_CLASSES, tile_area=AREA)[1]
    b = check_slide(back, f, p, q, tile_class_names=TILE_CLASSES, tile_area=AREA)[1]
    assert [c.passed for c in a] == [c.passed for c in b]
    assert [c.value for c in a] == pytest.approx([c.value for c in b], rel=1e-2)  # float16 bank


def test_a_tumour_limit_that_flags_its_own_reference_slides_is_dropped() -> None:
    """Tumour-free tissue scoring as high as tumour (a useless tile head): no no-tumour limit."""
    rng = np.random.default_rng(3)
    names = ["non_tumour", "a", "b"]
    slides = []
    for _ in range(6):
        p_t = rng.uniform(0.2, 0.4, 40)  # tumour probability of every tile, tumour or not
        probs = np.stack([1 - p_t, p_t / 2, p_t / 2], axis=1).astype(np.float32)
        slides.append((rng.normal(size=(40, 8)).astype(np.float32), probs,
                       np.abs(rng.normal(1.0, 0.1, (40, len(QC_FEATURE_NAMES)))).astype(np.float32)))
    ref = fit_domain_reference(slides, tile_class_names=names, tile_area=1e-3, in_bank=[True] * 6,
                               null_tumour_probs=[rng.uniform(0.2, 0.4, 40) for _ in range(6)], alpha=0.03,
                               alpha_tumour=0.01)
    assert "tumour_share:min" not in ref.limits and ref.tumour_rule is None
    assert ref.diagnostics["tumour_check_disabled_in_sample_flag_rate"] > 0.25
