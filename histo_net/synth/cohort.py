"""Cohort generation: the slide plan, slide files, tumour masks, GeoJSON and manifest.csv."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from PIL import Image

from histo_net.errors import ConfigError
from histo_net.io_utils import atomic_path, atomic_write_bytes, atomic_write_text, safe_child
from histo_net.synth.layout import polygon_area
from histo_net.synth.preview import write_preview
from histo_net.synth.render import make_tile_fn
from histo_net.synth.spec import (
    DIFFICULTIES,
    LABEL_COLORS,
    MANIFEST_COLUMNS,
    PRESETS,
    SlideJob,
    SlideSpec,
    build_spec,
)
from histo_net.synth.writer import write_pyramidal_slide
from histo_net.taxonomy import LABELS, NORMAL, SUBTYPE_LABEL, TUMOUR_SUBTYPES

log = logging.getLogger(__name__)

#: called after each slide with (slides done, slides planned, that slide's manifest row)
ProgressFn = Callable[[int, int, dict[str, object]], None]


def _geojson(spec: SlideSpec, label: str, subtype: str) -> str:
    """QuPath FeatureCollection of the tumour polygons, classified by the slide ``label``."""
    feats = []
    for k, poly in enumerate(spec.layout.tumour_polygons):
        ring = [[round(float(x), 2), round(float(y), 2)] for x, y in poly]
        ring.append(ring[0])
        feats.append({"type": "Feature", "id": f"tumour-{k}",
                      "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"objectType": "annotation", "subtype": subtype,
                                     "classification": {"name": label,
                                                        "color": list(LABEL_COLORS[label])}}})
    return json.dumps({"type": "FeatureCollection", "features": feats})


def generate_slide(job: SlideJob, out_dir: Path) -> dict[str, object]:
    """Write one slide, its mask PNG and GeoJSON; return its manifest row."""
    t0 = time.perf_counter()
    spec = build_spec(job)
    p = job.preset
    slide_rel = f"slides/{job.slide_id}.{job.ext}"
    write_pyramidal_slide(safe_child(out_dir, "slides", f"{job.slide_id}.{job.ext}"),
                          make_tile_fn(spec, p.tile_px, p.render_downsample),
                          width=job.width, height=job.height, mpp=p.mpp, tile_px=p.tile_px,
                          fmt=job.fmt, app_mag=10.0 / p.mpp, jpeg_quality=spec.jpeg_quality)
    mask_rel = f"masks/{job.slide_id}_tumour.png"
    buf = io.BytesIO()
    Image.fromarray(spec.layout.tumour.astype(np.uint8) * 255).save(buf, format="PNG")
    atomic_write_bytes(safe_child(out_dir, "masks", f"{job.slide_id}_tumour.png"), buf.getvalue())
    ann_rel = f"annotations/{job.slide_id}.geojson"
    atomic_write_text(safe_child(out_dir, "annotations", f"{job.slide_id}.geojson"),
                      _geojson(spec, job.label, job.subtype))
    lay = spec.layout
    tumour_area = sum(polygon_area(poly) for poly in lay.tumour_polygons)
    tissue_area = float(lay.tissue.sum()) * lay.mask_downsample**2
    cells = spec.style.cells
    return {
        "slide_id": job.slide_id, "patient_id": job.patient_id, "path": slide_rel, "label": job.label,
        "annotations": ann_rel, "mask": mask_rel, "mask_downsample": lay.mask_downsample,
        "tumour_fraction": round(tumour_area / max(tissue_area, 1.0), 4), "subtype": job.subtype,
        "difficulty": job.difficulty, "seed": job.seed, "preset": p.name, "width": job.width,
        "height": job.height, "level0_mpp": p.mpp, "stain_jitter": job.stain_jitter,
        "nuclear_radius_um": round(cells.nuclear_radius_um, 3), "cell_pitch_um": round(cells.pitch_um, 3),
        "blur_sigma_um": round(spec.stain.blur_sigma_um, 3), "jpeg_quality": spec.jpeg_quality,
        "format": job.fmt, "generator_seconds": round(time.perf_counter() - t0, 2),
    }


def _check(n_slides: int, preset: str, fmt: str, difficulty: str, subtypes: Sequence[str],
           normal_fraction: float, tumour_fraction: tuple[float, float] | None) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if fmt not in ("svs", "tiff"):
        raise ConfigError(f"format {fmt!r}: expected 'svs' or 'tiff'")
    if difficulty not in DIFFICULTIES:
        raise ConfigError(f"difficulty {difficulty!r}: expected one of {', '.join(DIFFICULTIES)}")
    if n_slides < 1:
        raise ConfigError(f"slides={n_slides}: must be >= 1")
    unknown = [s for s in subtypes if s not in TUMOUR_SUBTYPES]
    if unknown or not subtypes or len(set(subtypes)) != len(subtypes):
        raise ConfigError(f"subtypes {list(subtypes)}: expected distinct names among "
                          f"{', '.join(TUMOUR_SUBTYPES)}")
    if not 0 <= normal_fraction <= 1:
        raise ConfigError(f"normal_fraction={normal_fraction}: must be between 0 and 1")
    if tumour_fraction is not None:
        lo, hi = tumour_fraction
        if not 0 <= lo <= hi <= 0.9:
            raise ConfigError(f"tumour_fraction={lo},{hi}: need 0 <= low <= high <= 0.9")


def plan_cohort(n_slides: int, seed: int, preset: str, *, subtypes: Sequence[str] = TUMOUR_SUBTYPES,
                stain_jitter: float | None = None, fmt: str = "svs", difficulty: str = "standard",
                normal_fraction: float = 0.0, tumour_fraction: tuple[float, float] | None = None
                ) -> list[SlideJob]:
    """Balanced labels, subtypes cycled within each label, patients with one or two slides
    (one subtype per patient), per-slide seeds; ``normal_fraction`` of slides without tumour.

    ``tumour_fraction`` overrides the difficulty's tumour-fraction range; (0, 0) makes
    every slide ``normal``.
    """
    subtypes = list(subtypes)
    _check(n_slides, preset, fmt, difficulty, subtypes, normal_fraction, tumour_fraction)
    p = PRESETS[preset]
    jitter = p.stain_jitter if stain_jitter is None else float(stain_jitter)
    if not 0 <= jitter <= 2:
        raise ConfigError(f"stain_jitter={jitter}: must be between 0 and 2")
    rng = np.random.default_rng([seed, 0])
    all_normal = tumour_fraction is not None and tumour_fraction[1] == 0
    n_normal = n_slides if all_normal else round(normal_fraction * n_slides)
    families = [[s for s in subtypes if SUBTYPE_LABEL[s] == lab] for lab in LABELS]
    families = [f for f in families if f]
    labels = [i % len(families) for i in range(n_slides - n_normal)] + [-1] * n_normal
    rng.shuffle(labels)
    offsets = [int(rng.integers(len(f))) for f in families]
    counts = [0] * len(families)
    open_patient: dict[str, str] = {}
    n_patients = 0
    jobs: list[SlideJob] = []
    for i, li in enumerate(labels):
        if li < 0:
            subtype = NORMAL
        else:
            fam = families[li]
            subtype = fam[(counts[li] + offsets[li]) % len(fam)]
            counts[li] += 1
        if subtype in open_patient and rng.random() < 0.35:
            patient = open_patient.pop(subtype)  # a second slide of the same patient
        else:
            n_patients += 1
            patient = f"P{n_patients:03d}"
            open_patient[subtype] = patient
        w = int(rng.integers(p.size_px[0], p.size_px[1] + 1))
        h = int(rng.integers(p.size_px[0], p.size_px[1] + 1))
        jobs.append(SlideJob(f"synth_{i:03d}", patient, subtype, int(seed * 1000 + i), w, h, p, jitter,
                             fmt, difficulty, None if all_normal else tumour_fraction))
    return jobs


def _run(args: tuple[SlideJob, Path]) -> dict[str, object]:
    return generate_slide(*args)


def generate_cohort(out_dir: Path, *, n_slides: int, seed: int, preset: str = "tiny",
                    stain_jitter: float | None = None, fmt: str = "svs", workers: int = 1,
                    preview: bool = True, difficulty: str = "standard",
                    subtypes: Sequence[str] = TUMOUR_SUBTYPES, normal_fraction: float = 0.0,
                    tumour_fraction: tuple[float, float] | None = None,
                    progress: ProgressFn | None = None) -> Path:
    """Generate ``n_slides`` slides into ``out_dir``; returns ``out_dir / "manifest.csv"``.

    Layout: ``slides/``, ``masks/``, ``annotations/``, ``manifest.csv``, ``preview.png``.
    ``progress(done, total, row)`` is called as each slide finishes (any order with workers).
    """
    out_dir = Path(out_dir)
    jobs = plan_cohort(n_slides, seed, preset, subtypes=subtypes, stain_jitter=stain_jitter, fmt=fmt,
                       difficulty=difficulty, normal_fraction=normal_fraction,
                       tumour_fraction=tumour_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows: dict[str, dict[str, object]] = {}

    def done(row: dict[str, object]) -> None:
        rows[str(row["slide_id"])] = row
        if progress is not None:
            progress(len(rows), len(jobs), row)

    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for fut in as_completed([pool.submit(_run, (j, out_dir)) for j in jobs]):
                done(fut.result())
    else:
        for j in jobs:
            done(generate_slide(j, out_dir))
    log.info("generated %d slides in %.1f s", len(rows), time.perf_counter() - t0)
    manifest = out_dir / "manifest.csv"
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows(rows[j.slide_id] for j in jobs)
    if preview:
        write_preview(out_dir, jobs)
    return manifest
