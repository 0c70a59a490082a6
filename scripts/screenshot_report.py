#!/usr/bin/env python
"""Render a report.html to PNG with headless Chromium (checks that the report and heatmaps render).

    python scripts/screenshot_report.py DIR/slide/report.html out.png
    python scripts/screenshot_report.py --example OUT_DIR [--thumbnail IMAGE.png]

``--example`` first writes a report for a plausible synthetic prediction on a real H&E
image (default: ../shared/data/real/he_tiles/tiatoolbox_target_image.png) into OUT_DIR,
then screenshots it to OUT_DIR/report.png. Exit 2 when Chromium is not installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from histo_net.report.model import SlideReport

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEFAULT_THUMBNAIL = (Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "he_tiles"
                     / "tiatoolbox_target_image.png")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot_html(html_path: Path, png_path: Path, *, width_px: int = 1280, height_px: int = 2400,
                    timeout_s: float = 90.0) -> Path:
    """Screenshot ``html_path`` (a local file) into ``png_path`` with headless Chromium."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found on PATH (apt-get install chromium)")
    html_path = Path(html_path).resolve()
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="histo-net-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--screenshot={png_path}", f"--window-size={width_px},{height_px}",
               html_path.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if not png_path.is_file() or png_path.stat().st_size == 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{html_path}: chromium wrote no screenshot (rc {proc.returncode}: {tail[0]})")
    return png_path


def example_report(thumbnail_path: Path, slide_name: str = "example <slide>.svs") -> SlideReport:
    """A plausible SlideReport on a real H&E image (synthetic scores, for visual checks)."""
    import numpy as np
    from PIL import Image

    from histo_net.report.model import GalleryTile, SlideReport

    rgb = np.asarray(Image.open(thumbnail_path).convert("RGB"))
    level0 = rgb  # treat the image as level 0 at 0.5 um/px
    downsample = 2.0
    thumb = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] // 2, rgb.shape[0] // 2)))
    tissue = thumb.astype(float).std(axis=2) > 12  # crude: coloured pixels are tissue
    patch = 112
    ys, xs = np.mgrid[0:rgb.shape[0] - patch + 1:patch // 2, 0:rgb.shape[1] - patch + 1:patch // 2]
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    rng = np.random.default_rng(0)
    centre = np.array([rgb.shape[1] * 0.35, rgb.shape[0] * 0.6])
    dist = np.linalg.norm(coords + patch / 2 - centre, axis=1) / max(rgb.shape[:2])
    p_net = np.clip(0.9 - 1.6 * dist + rng.normal(0, 0.05, len(coords)), 0.01, 0.99)
    p_non = np.clip(rng.uniform(0.0, 0.3, len(coords)), 0, 1) * (1 - p_net)
    probs = np.stack([p_non, p_net, 1 - p_net - p_non], axis=1)
    logits = 6 * p_net + rng.normal(0, 0.3, len(coords))
    attention = np.exp(logits - logits.max())
    attention /= attention.sum()
    names = ["non_tumour", "neuroendocrine", "other_srct"]
    order = np.argsort(-attention)

    def tile(i: int) -> GalleryTile:
        x, y = (int(v) for v in coords[i])
        return GalleryTile(rgb=level0[y:y + patch, x:x + patch], coords_level0=(x, y),
                           attention=float(attention[i]),
                           probs={n: float(p) for n, p in zip(names, probs[i])})

    return SlideReport(
        slide_id="example_slide", slide_name=slide_name, predicted_class="neuroendocrine",
        status="ok", probabilities={"neuroendocrine": 0.87, "other_srct": 0.13},
        positive_class="neuroendocrine", threshold=0.5, indeterminate_band=(0.35, 0.65),
        tile_class_names=names, coords_level0=coords, patch_size_level0=patch, attention=attention,
        tile_probs=probs, thumbnail=thumb, thumbnail_downsample=downsample, tissue_mask=tissue,
        tissue_downsample=downsample, top_tiles=[tile(i) for i in order[:8]],
        bottom_tiles=[tile(i) for i in order[::-1][:4]],
        qc={"tissue_area_mm2": float(tissue.sum() * (downsample * 0.5e-3) ** 2),
            "tile_count": len(coords), "mpp": 0.5, "mpp_source": "override", "target_mpp": 0.5,
            "tile_size_px": patch, "blurred_fraction": 0.04, "stain_distance": 2.7,
            "stain_in_range": False,
            "warnings": [("stain differs from the training cohort (distance 2.70 > 2.00); "
                          "prediction may be unreliable")]},
        provenance={"input_path": str(thumbnail_path), "input_sha256": "0" * 64,
                    "bundle_path": "model.pt", "bundle_sha256": "1" * 64,
                    "histo_net_version": "0.1.0", "run_date": "2026-11-24T02:00:00+00:00",
                    "model_card": "demo bundle trained on the synthetic cohort"},
        label="neuroendocrine")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", help="report.html to render")
    parser.add_argument("png", nargs="?", help="output PNG")
    parser.add_argument("--example", metavar="OUT_DIR", help="write an example report first")
    parser.add_argument("--thumbnail", default=str(DEFAULT_THUMBNAIL), help="image for --example")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("screenshot_report: chromium not found on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    if args.example:
        from histo_net.report.write import write_slide_report

        out_dir = Path(args.example)
        write_slide_report(out_dir, example_report(Path(args.thumbnail)))
        html, png = out_dir / "report.html", out_dir / "report.png"
    elif args.html and args.png:
        html, png = Path(args.html), Path(args.png)
    else:
        parser.error("give HTML and PNG paths, or --example OUT_DIR")
    print(screenshot_html(html, png, width_px=args.width, height_px=args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
