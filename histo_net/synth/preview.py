"""``preview.png``: slide thumbnails with tumour outlines and tumour crops per subtype; and
the README panel (one labelled crop per subtype at 0.5 um/px).

``python -c "from histo_net.synth.preview import main; main(['OUT.png'])"`` writes the README
panel (default ``docs/images/synth_subtypes.jpg``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from histo_net.io_utils import atomic_path
from histo_net.synth.render import render_region
from histo_net.synth.spec import LABEL_COLORS, PRESETS, SlideJob, build_spec
from histo_net.taxonomy import TUMOUR_SUBTYPES

_THUMB_PX = 240
_CROP_PX = 224


def _thumbnail(slide_path: Path) -> np.ndarray:
    """Lowest pyramid level of a written slide, (H, W, 3) uint8."""
    import tifffile  # deferred: heavy, and only the preview needs it here

    with tifffile.TiffFile(slide_path) as tif:
        return tif.pages[-1].asarray()


def tumour_crop(job: SlideJob, crop_px: int = _CROP_PX, attempt: int = 0) -> np.ndarray | None:
    """A crop (crop_px at 0.5 um/px) wholly inside the slide's tumour, None without tumour."""
    spec = build_spec(job)
    lay = spec.layout
    ds = lay.mask_downsample
    ys, xs = np.nonzero(lay.tumour)
    if len(ys) == 0:
        return None
    rng = np.random.default_rng([job.seed, 9, attempt])
    half = crop_px  # level-0 px: crop_px output px at downsample 2
    cx, cy = int((xs[0] + 0.5) * ds), int((ys[0] + 0.5) * ds)
    for _try in range(60):
        k = int(rng.integers(len(ys)))
        cy, cx = int((ys[k] + 0.5) * ds), int((xs[k] + 0.5) * ds)
        y0, x0 = (cy - half) // ds, (cx - half) // ds
        y1, x1 = -(-(cy + half) // ds), -(-(cx + half) // ds)
        if y0 >= 0 and x0 >= 0 and lay.tumour[y0:y1, x0:x1].all():
            break
    return render_region(spec, cx - half, cy - half, crop_px, crop_px, 2.0)


def write_preview(out_dir: Path, jobs: Sequence[SlideJob], max_slides: int = 8,
                  crops_per_subtype: int = 4) -> Path:
    """Write ``out_dir/preview.png``: row 1 thumbnails (tumour outline in the label colour),
    then per subtype present a row of tumour crops at 0.5 um/px."""
    out_dir = Path(out_dir)
    thumbs = []
    for job in list(jobs)[:max_slides]:
        img = Image.fromarray(_thumbnail(out_dir / "slides" / f"{job.slide_id}.{job.ext}"))
        scale = _THUMB_PX / max(img.size)
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))))
        mask = np.asarray(Image.open(out_dir / "masks" / f"{job.slide_id}_tumour.png").resize(img.size)) > 127
        edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 0) & np.roll(mask, -1, 1))
        arr = np.asarray(img).copy()
        arr[edge] = LABEL_COLORS[job.label]
        tile = Image.new("RGB", (_THUMB_PX, _THUMB_PX + 14), "white")
        tile.paste(Image.fromarray(arr), (0, 14))
        ImageDraw.Draw(tile).text((2, 1), f"{job.slide_id} {job.subtype[:22]}", fill="black")
        thumbs.append(tile)
    present = [s for s in TUMOUR_SUBTYPES if any(j.subtype == s for j in jobs)]
    rows: list[Image.Image] = []
    for subtype in present:
        sub_jobs = [j for j in jobs if j.subtype == subtype]
        crops = [tumour_crop(sub_jobs[k % len(sub_jobs)], attempt=k // len(sub_jobs))
                 for k in range(crops_per_subtype)]
        row = Image.new("RGB", (crops_per_subtype * (_CROP_PX + 4), _CROP_PX + 16), "white")
        ImageDraw.Draw(row).text((2, 2), f"{subtype} ({sub_jobs[0].label}): tumour at 0.5 um/px",
                                 fill="black")
        for k, crop in enumerate(crops):
            if crop is not None:
                row.paste(Image.fromarray(crop), (k * (_CROP_PX + 4), 16))
        rows.append(row)
    width = max([crops_per_subtype * (_CROP_PX + 4)] + [len(thumbs) * (_THUMB_PX + 4)])
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


def subtype_panel(seed: int = 2026, crop_px: int = 288, columns: int = 3,
                  difficulty: str = "standard", stain_jitter: float = 0.0) -> Image.Image:
    """One labelled tumour crop per subtype (0.5 um/px, 50 um scale bar), ``columns`` per row;
    the reference stain by default, so the panel shows morphology rather than stain batches."""
    cells = []
    for i, subtype in enumerate(TUMOUR_SUBTYPES):
        job = SlideJob(f"panel_{i}", "P", subtype, seed * 100 + i, 4096, 4096, PRESETS["small"],
                       stain_jitter, "svs", difficulty, (0.5, 0.6))
        crop = tumour_crop(job, crop_px)
        tile = Image.new("RGB", (crop_px, crop_px + 18), "white")
        if crop is not None:
            tile.paste(Image.fromarray(crop), (0, 18))
        draw = ImageDraw.Draw(tile)
        draw.text((3, 3), f"{subtype} ({job.label})", fill="black")
        x1, y1 = crop_px - 8, crop_px + 10  # 50 um = 100 px at 0.5 um/px
        draw.rectangle((x1 - 106, y1 - 16, x1 + 3, y1 + 5), fill="white")
        draw.rectangle((x1 - 100, y1, x1, y1 + 3), fill="black")
        draw.text((x1 - 66, y1 - 13), "50 um", fill="black")
        cells.append(tile)
    n_rows = -(-len(cells) // columns)
    w, h = cells[0].size
    canvas = Image.new("RGB", (columns * (w + 6) - 6, n_rows * (h + 6) - 6), "white")
    for k, tile in enumerate(cells):
        canvas.paste(tile, ((k % columns) * (w + 6), (k // columns) * (h + 6)))
    return canvas


def main(argv: list[str] | None = None) -> int:
    """Write the README panel to ``argv[0]`` (default docs/images/synth_subtypes.jpg)."""
    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0] if argv else "docs/images/synth_subtypes.jpg")
    target.parent.mkdir(parents=True, exist_ok=True)
    panel = subtype_panel()
    if target.suffix.lower() in (".jpg", ".jpeg"):
        panel.convert("RGB").save(target, format="JPEG", quality=88)
    else:
        panel.save(target, format="PNG", optimize=True)
    print(target, target.stat().st_size // 1024, "KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
