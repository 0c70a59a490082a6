"""Cohort generation: slide specs, slide files, tumour masks, GeoJSON and manifest.csv."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from histo_net.errors import ConfigError
from histo_net.io_utils import atomic_path, atomic_write_bytes, atomic_write_text, safe_child
from histo_net.synth.layout import make_layout, polygon_area
from histo_net.synth.morphology import TumourStyle, pattern_families
from histo_net.synth.render import SlideSpec, make_tile_fn
from histo_net.synth.stain import sample_stain
from histo_net.synth.writer import write_pyramidal_slide

log = logging.getLogger(__name__)

DEFAULT_CLASSES: tuple[str, ...] = ("neuroendocrine", "other_small_round_cell")
CLASS_COLORS: tuple[tuple[int, int, int], ...] = ((230, 60, 60), (60, 90, 230), (40, 170, 60), (200, 140, 20))


@dataclass(frozen=True)
class Preset:
    """Slide size range (level-0 px), level-0 mpp, render downsample and default stain jitter."""

    name: str
    size_px: tuple[int, int]
    mpp: float = 0.25
    render_downsample: int = 2
    mask_downsample: int = 16
    stain_jitter: float = 0.5
    tile_px: int = 256


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", (3072, 3840)),
    "small": Preset("small", (6144, 7680)),
    "benchmark": Preset("benchmark", (20480, 22528)),
}

MANIFEST_COLUMNS: tuple[str, ...] = (
    "slide_id", "patient_id", "path", "label", "annotations", "mask", "mask_downsample",
    "tumour_fraction", "seed", "preset", "width", "height", "mpp", "stain_jitter", "subpattern",
    "format", "generator_seconds",
)


@dataclass(frozen=True)
class SlideJob:
    """One slide to generate (picklable for worker processes)."""

    slide_id: str
    patient_id: str
    label_index: int
    label: str
    pattern: str
    seed: int
    width: int
    height: int
    preset: Preset
    stain_jitter: float
    fmt: str


def build_spec(job: SlideJob) -> SlideSpec:
    """The deterministic render spec of a slide job; layout does not depend on the label."""
    rng = np.random.default_rng([job.seed, 1])
    layout = make_layout(rng, job.width, job.height, job.preset.mpp, job.preset.mask_downsample,
                         field_seed=job.seed * 7 + 3)
    srng = np.random.default_rng([job.seed, 2])
    stain = sample_stain(srng, job.stain_jitter)
    style_rng = np.random.default_rng([job.seed, 3])
    style = TumourStyle(job.pattern, job.seed * 13 + 5, scale=float(style_rng.uniform(0.93, 1.07)),
                        orientation=float(style_rng.uniform(0, np.pi)))
    return SlideSpec(job.seed, layout, style, stain, float(srng.uniform(0, np.pi)))


def _geojson(spec: SlideSpec, label: str, color: tuple[int, int, int]) -> str:
    feats = []
    for k, poly in enumerate(spec.layout.tumour_polygons):
        ring = [[round(float(x), 2), round(float(y), 2)] for x, y in poly]
        ring.append(ring[0])
        feats.append({"type": "Feature", "id": f"tumour-{k}",
                      "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"objectType": "annotation",
                                     "classification": {"name": label, "color": list(color)}}})
    return json.dumps({"type": "FeatureCollection", "features": feats})


def generate_slide(job: SlideJob, out_dir: Path) -> dict[str, object]:
    """Write one slide, its mask PNG and GeoJSON; return its manifest row."""
    t0 = time.perf_counter()
    spec = build_spec(job)
    p = job.preset
    ext = "svs" if job.fmt == "svs" else "tiff"
    slide_rel = f"slides/{job.slide_id}.{ext}"
    write_pyramidal_slide(safe_child(out_dir, "slides", f"{job.slide_id}.{ext}"),
                          make_tile_fn(spec, p.tile_px, p.render_downsample),
                          width=job.width, height=job.height, mpp=p.mpp, tile_px=p.tile_px,
                          fmt=job.fmt, app_mag=10.0 / p.mpp,
                          jpeg_quality=int(np.random.default_rng([job.seed, 4]).integers(78, 92)))
    mask_rel = f"masks/{job.slide_id}_tumour.png"
    buf = io.BytesIO()
    Image.fromarray(spec.layout.tumour.astype(np.uint8) * 255).save(buf, format="PNG")
    atomic_write_bytes(safe_child(out_dir, "masks", f"{job.slide_id}_tumour.png"), buf.getvalue())
    ann_rel = f"annotations/{job.slide_id}.geojson"
    color = CLASS_COLORS[job.label_index % len(CLASS_COLORS)]
    atomic_write_text(safe_child(out_dir, "annotations", f"{job.slide_id}.geojson"),
                      _geojson(spec, job.label, color))
    lay = spec.layout
    tumour_area = sum(polygon_area(poly) for poly in lay.tumour_polygons)
    tissue_area = float(lay.tissue.sum()) * lay.mask_downsample**2
    return {
        "slide_id": job.slide_id, "patient_id": job.patient_id, "path": slide_rel, "label": job.label,
        "annotations": ann_rel, "mask": mask_rel, "mask_downsample": lay.mask_downsample,
        "tumour_fraction": round(tumour_area / max(tissue_area, 1.0), 4), "seed": job.seed,
        "preset": p.name, "width": job.width, "height": job.height, "mpp": p.mpp,
        "stain_jitter": job.stain_jitter, "subpattern": job.pattern, "format": job.fmt,
        "generator_seconds": round(time.perf_counter() - t0, 2),
    }


def plan_cohort(n_slides: int, seed: int, preset: str, classes: Sequence[str],
                stain_jitter: float | None, fmt: str) -> list[SlideJob]:
    """Balanced labels, patients with one or two slides, per-slide seeds and sub-patterns."""
    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if fmt not in ("svs", "tiff"):
        raise ConfigError(f"format {fmt!r}: expected 'svs' or 'tiff'")
    if n_slides < 1:
        raise ConfigError(f"slides={n_slides}: must be >= 1")
    classes = list(classes)
    if len(set(classes)) != len(classes) or any(not c.strip() for c in classes):
        raise ConfigError(f"classes {classes}: names must be unique and non-empty")
    families = pattern_families(len(classes))
    p = PRESETS[preset]
    jitter = p.stain_jitter if stain_jitter is None else float(stain_jitter)
    if not 0 <= jitter <= 2:
        raise ConfigError(f"stain_jitter={jitter}: must be between 0 and 2")
    rng = np.random.default_rng([seed, 0])
    labels = [i % len(classes) for i in range(n_slides)]
    rng.shuffle(labels)
    jobs: list[SlideJob] = []
    pattern_count: dict[int, int] = {}
    class_offset = [int(rng.integers(len(f))) for f in families]
    open_patient: dict[int, str] = {}
    n_patients = 0
    for i, li in enumerate(labels):
        if li in open_patient and rng.random() < 0.35:
            patient = open_patient.pop(li)  # a second slide of the same patient
        else:
            n_patients += 1
            patient = f"P{n_patients:03d}"
            open_patient[li] = patient
        fam = families[li]
        k = pattern_count.get(li, 0)
        pattern_count[li] = k + 1
        pattern = fam[(k + class_offset[li]) % len(fam)]
        w = int(rng.integers(p.size_px[0], p.size_px[1] + 1))
        h = int(rng.integers(p.size_px[0], p.size_px[1] + 1))
        jobs.append(SlideJob(f"synth_{i:03d}", patient, li, classes[li], pattern,
                             int(seed * 1000 + i), w, h, p, jitter, fmt))
    return jobs


def _run(args: tuple[SlideJob, Path]) -> dict[str, object]:
    return generate_slide(*args)


def generate_cohort(out_dir: Path, *, n_slides: int, seed: int, preset: str = "tiny",
                    classes: Sequence[str] = DEFAULT_CLASSES, stain_jitter: float | None = None,
                    fmt: str = "svs", workers: int = 1, preview: bool = True) -> Path:
    """Generate ``n_slides`` slides into ``out_dir``; returns ``out_dir / "manifest.csv"``.

    Layout: ``slides/``, ``masks/``, ``annotations/``, ``manifest.csv``, ``preview.png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_cohort(n_slides, seed, preset, classes, stain_jitter, fmt)
    t0 = time.perf_counter()
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            rows = list(pool.map(_run, [(j, out_dir) for j in jobs]))
    else:
        rows = [generate_slide(j, out_dir) for j in jobs]
    log.info("generated %d slides in %.1f s", len(rows), time.perf_counter() - t0)
    manifest = out_dir / "manifest.csv"
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    if preview:
        from histo_net.synth.preview import write_preview

        write_preview(out_dir, jobs)
    return manifest
