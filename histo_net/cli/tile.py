"""``histo-net tile``: detect tissue and write tile coordinates for slides.

Writes ``OUT/tiles/<slide_id>.h5`` (coords + attrs, DESIGN.md section 3) and
``OUT/tiles/<slide_id>_qc.png`` per slide. Slides whose h5 already exists with the
same settings are skipped unless ``--overwrite``. One line per slide on stdout,
one line per failed slide on stderr; exit 0 all ok, 1 some failed, 2 usage error.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from histo_net.cli.common import (
    add_config_options,
    add_slide_inputs,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from pathlib import Path

    from histo_net.config import TilingConfig
    from histo_net.wsi.inputs import SlideSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``tile`` options."""
    add_slide_inputs(parser)
    add_config_options(parser, "default: built-in defaults, see configs/tiling.yaml")
    parser.add_argument("--target-mpp", type=positive_float, default=None,
                        help="um/px tiles are read at (config target_mpp, default 0.5)")
    parser.add_argument("--tile-size", type=positive_int, default=None,
                        help="tile side in pixels at the target mpp (config tile_size_px, default 224)")
    parser.add_argument("--no-qc", action="store_true", help="do not write the tissue QC PNG")


def _tile_one(spec: SlideSpec, cfg: TilingConfig, tiles_dir: Path, overwrite: bool,
              write_qc: bool) -> str:
    """Tile one slide; returns its summary line. Raises HistoNetError on failure."""
    import time

    from histo_net.errors import HistoNetError
    from histo_net.io_utils import safe_child
    from histo_net.wsi.slide import open_slide
    from histo_net.wsi.tiling import (
        read_tiles_h5,
        tile_slide,
        tiling_settings_match,
        write_tiles_h5,
        write_tissue_qc_png,
    )

    start = time.perf_counter()
    h5_path = safe_child(tiles_dir, f"{spec.slide_id}.h5")
    qc_path = safe_child(tiles_dir, f"{spec.slide_id}_qc.png")
    with open_slide(spec.path, mpp_override=spec.mpp) as slide:
        mpp_text = f"mpp {slide.mpp:.4g} ({slide.mpp_source})"
        if h5_path.exists() and not overwrite:
            try:
                coords, attrs = read_tiles_h5(h5_path)
            except HistoNetError:  # unreadable or truncated: tile again
                attrs = None
            if attrs is not None and tiling_settings_match(attrs, cfg, slide.mpp):
                return (f"{spec.slide_id}: skipped, already tiled with the same settings "
                        f"({len(coords)} tiles, {mpp_text}); use --overwrite to redo")
        result = tile_slide(slide, cfg)
    write_tiles_h5(h5_path, result)
    if write_qc:
        write_tissue_qc_png(qc_path, result)
    seconds = time.perf_counter() - start
    return (f"{spec.slide_id}: {len(result.coords)} tiles, tissue {result.tissue_area_mm2:.2f} mm2, "
            f"{mpp_text}, level {result.plan.level}, {seconds:.1f} s")


def run(args: argparse.Namespace) -> int:
    """Tile every input slide; per-slide failures are reported and do not stop the batch."""
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from histo_net.cli.common import EXIT_FAILED, EXIT_OK, flag_overrides
    from histo_net.config import TilingConfig, load_config
    from histo_net.errors import HistoNetError
    from histo_net.io_utils import safe_child
    from histo_net.wsi.inputs import resolve_inputs

    overrides = flag_overrides(args.overrides, target_mpp=args.target_mpp, tile_size_px=args.tile_size)
    cfg = load_config(TilingConfig, args.config, overrides)
    specs = resolve_inputs(args.inputs, mpp_override=args.mpp)
    tiles_dir = safe_child(Path(args.out), "tiles")
    tiles_dir.mkdir(parents=True, exist_ok=True)

    failed = 0
    bar = tqdm(specs, desc="tile", unit="slide", file=sys.stderr, dynamic_ncols=True,
               disable=None)
    for spec in bar:
        bar.set_postfix_str(spec.slide_id[:40])
        try:
            line = _tile_one(spec, cfg, tiles_dir, args.overwrite, not args.no_qc)
        except HistoNetError as exc:
            failed += 1
            tqdm.write(f"FAILED {spec.slide_id}: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001  unexpected: still one line, the batch goes on
            failed += 1
            reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            tqdm.write(f"FAILED {spec.slide_id}: {spec.path}: unexpected "
                       f"{type(exc).__name__}: {reason}", file=sys.stderr)
            continue
        tqdm.write(line, file=sys.stdout)
    bar.close()
    done = len(specs) - failed
    print(f"tiled {done}/{len(specs)} slides into {tiles_dir}"
          + (f"; {failed} failed" if failed else ""), file=sys.stderr if failed else sys.stdout)
    return EXIT_FAILED if failed else EXIT_OK
