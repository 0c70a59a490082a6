"""``histo-net tile``: detect tissue and write tile coordinates for slides.

Writes ``OUT/tiles/<slide_id>.h5`` (coords + attrs, DESIGN.md section 3) and
``OUT/tiles/<slide_id>_qc.png`` per slide through the batch runner (state files, resume,
``--shard``, failure isolation). One line per slide on stdout, one line per failed slide on
stderr; exit 0 all ok, 1 some failed, 2 usage error.
"""

from __future__ import annotations

import argparse

from histo_net.cli.common import (
    add_config_options,
    add_progress_option,
    add_shard_option,
    add_slide_inputs,
    add_slide_timeout_option,
    flag_overrides,
    positive_float,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``tile`` options."""
    add_slide_inputs(parser)
    add_config_options(parser, "default: built-in defaults, see configs/tiling.yaml",
                       example="tile_size_px=256")
    parser.add_argument("--target-mpp", type=positive_float, default=None,
                        help="um/px tiles are read at (config target_mpp, default 0.5)")
    parser.add_argument("--tile-size", type=positive_int, default=None,
                        help="tile side in pixels at the target mpp (config tile_size_px, default 224)")
    parser.add_argument("--no-qc", action="store_true", help="do not write the tissue QC PNG")
    add_slide_timeout_option(parser)
    add_shard_option(parser)
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    """Tile every input slide; per-slide failures are reported and do not stop the batch."""
    import sys
    from pathlib import Path

    from histo_net.batch.tiling import TILES_DIR, run_tiling  # deferred: keeps --help fast
    from histo_net.config import TilingConfig, load_config

    overrides = flag_overrides(args.overrides, target_mpp=args.target_mpp, tile_size_px=args.tile_size)
    cfg = load_config(TilingConfig, args.config, overrides)
    out = Path(args.out)
    summary = run_tiling(args.inputs, out_dir=out, cfg=cfg, mpp_override=args.mpp, shard=args.shard,
                         overwrite=args.overwrite, write_qc=not args.no_qc, progress=args.progress,
                         slide_timeout_s=args.slide_timeout)
    total = len(summary.done) + len(summary.skipped) + len(summary.failed)
    failed = len(summary.failed)
    print(f"tiled {total - failed}/{total} slides into {out / TILES_DIR}"
          + (f"; {failed} failed" if failed else ""), file=sys.stderr if failed else sys.stdout)
    return summary.exit_code()
