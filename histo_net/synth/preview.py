"""``preview.png``: slide thumbnails with tumour outlines, and level-0 crops per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from histo_net.io_utils import atomic_path

if TYPE_CHECKING:
    from histo_net.synth.cohort import SlideJob

_THUMB_PX = 240
_CROP_PX = 224


def _thumbnail(slide_path: Path) -> np.ndarray:
    """Lowest pyramid level of a written slide, (H, W, 3) uint8."""
    import tifffile

    with tifffile.TiffFile(slide_path) as tif:
        return tif.pages[-1].asarray()


def _tumour_crops(job: SlideJob, n: int) -> list[np.ndarray]:
    """``n`` crops (224 px at 0.5 um/px, i.e. 448 level-0 px) centred in tumour."""
    from histo_net.synth.cohort import build_spec
    from histo_net.synth.render import render_region

    spec = build_spec(job)
    lay = spec.layout
    ds = lay.mask_downsample
    ys, xs = np.nonzero(lay.tumour)
    rng = np.random.default_rng([job.seed, 9])
    crops = []
    half = _CROP_PX  # level-0 px for a 224 px crop at downsample 2
    for _ in range(n):
        for _try in range(30):
            k = int(rng.integers(len(ys)))
            cy, cx = int((ys[k] + 0.5) * ds), int((xs[k] + 0.5) * ds)
            y0, x0 = (cy - half) // ds, (cx - half) // ds
            y1, x1 = -(-(cy + half) // ds), -(-(cx + half) // ds)
            if y0 >= 0 and x0 >= 0 and lay.tumour[y0:y1, x0:x1].all():
                break
        crops.append(render_region(spec, cx - half, cy - half, _CROP_PX, _CROP_PX, 2.0))
    return crops


def write_preview(out_dir: Path, jobs: Sequence[SlideJob], max_slides: int = 8,
                  crops_per_class: int = 6) -> Path:
    """Write ``out_dir/preview.png``: row 1 thumbnails (tumour outline in the class colour),
    then per class a row of tumour crops at 0.5 um/px from slides of that class."""
    from histo_net.synth.cohort import CLASS_COLORS

    out_dir = Path(out_dir)
    thumbs = []
    for job in list(jobs)[:max_slides]:
        ext = "svs" if job.fmt == "svs" else "tiff"
        img = Image.fromarray(_thumbnail(out_dir / "slides" / f"{job.slide_id}.{ext}"))
        scale = _THUMB_PX / max(img.size)
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))))
        mask = np.asarray(Image.open(out_dir / "masks" / f"{job.slide_id}_tumour.png").resize(img.size))
        edge = (mask > 127) & ~(np.roll(mask > 127, 1, 0) & np.roll(mask > 127, 1, 1)
                                & np.roll(mask > 127, -1, 0) & np.roll(mask > 127, -1, 1))
        arr = np.asarray(img).copy()
        arr[edge] = CLASS_COLORS[job.label_index % len(CLASS_COLORS)]
        tile = Image.new("RGB", (_THUMB_PX, _THUMB_PX + 14), "white")
        tile.paste(Image.fromarray(arr), (0, 14))
        ImageDraw.Draw(tile).text((2, 1), f"{job.slide_id} {job.label[:14]} {job.pattern}", fill="black")
        thumbs.append(tile)
    labels = sorted({(j.label_index, j.label) for j in jobs})
    rows: list[Image.Image] = []
    for li, label in labels:
        class_jobs = [j for j in jobs if j.label_index == li]
        crops: list[np.ndarray] = []
        for k in range(crops_per_class):
            crops.extend(_tumour_crops(class_jobs[k % len(class_jobs)], 1))
        row = Image.new("RGB", (crops_per_class * (_CROP_PX + 4), _CROP_PX + 16), "white")
        ImageDraw.Draw(row).text((2, 2), f"{label}: tumour at 0.5 um/px", fill="black")
        for k, crop in enumerate(crops):
            row.paste(Image.fromarray(crop), (k * (_CROP_PX + 4), 16))
        rows.append(row)
    width = max([crops_per_class * (_CROP_PX + 4)] + [len(thumbs) * (_THUMB_PX + 4)])
    height = (_THUMB_PX + 18) + sum(r.height + 4 for r in rows)
    canvas = Image.new("RGB", (width, height), "white")
    for k, t in enumerate(thumbs):
        canvas.paste(t, (k * (_THUMB_PX + 4), 0))
    y = _THUMB_PX + 18
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + 4
    path = out_dir / "preview.png"
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
